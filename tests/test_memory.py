"""keep_freed_memory: freed blocks are reused instead of being faulted in again."""

import subprocess
import sys

import pytest

from spacy_elmo.pipeline import architectures

PAGE_FAULTS = """
import resource, sys
import numpy as np
from spacy_elmo.bilm.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):
    block = np.ones(8 * 2**20); del block
start = faults()
for _ in range(10):
    block = np.ones(8 * 2**20); del block  # 64 MiB, 16,384 pages: above glibc's largest mmap threshold
print(faults() - start)
"""


def _page_faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", PAGE_FAULTS, mode], capture_output=True, text=True, check=True)
    return int(result.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator settings are Linux-only")
def test_freed_blocks_are_reused_without_page_faults():
    default, keep = _page_faults("default"), _page_faults("keep")
    assert default > 100  # each 64 MiB block is mapped and faulted in afresh
    assert keep <= default // 10


@pytest.mark.parametrize("keep", [True, False])
def test_architecture_setting_switches_it(model_dir, monkeypatch, keep):
    calls = []
    monkeypatch.setattr(architectures.bilm_memory, "keep_freed_memory", lambda: calls.append(1) or True)
    architectures.ElmoBiLM_v1(str(model_dir), keep_freed_memory=keep)
    assert len(calls) == int(keep)
