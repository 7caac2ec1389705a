"""keep_freed_memory: freed blocks are reused instead of being faulted in again; only a config opts in."""

import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.training import Example

from spacy_elmo.pipeline import callbacks

REPO = Path(__file__).resolve().parents[1]

PAGE_FAULTS = """
import resource, sys
import numpy as np
from spacy_elmo.memory import keep_freed_memory
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


def test_only_the_config_callback_switches_it(model_dir, monkeypatch):
    """Building a pipeline leaves the allocator alone; the spacy-elmo.keep_freed_memory.v1
    callback in [initialize.before_init] sets it."""
    calls = []
    monkeypatch.setattr(callbacks, "keep_freed_memory", lambda: calls.append(1) or True)
    config = spacy.util.load_config(REPO / "configs" / "ner_elmo.cfg")
    config = config.merge({"components": {"elmo": {"model": {"weights": str(model_dir)}}}})
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    assert calls == []
    nlp.initialize(lambda: [Example(nlp.make_doc("John lives in Paris ."), nlp.make_doc("John lives in Paris ."))])
    assert calls == [1]


GROWING_COPIES = """
import sys
import srsly
from spacy_elmo.memory import keep_freed_memory, large_allocations_returned
assert keep_freed_memory()
def rss_kib():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])
big = b"x" * (64 * 2**20)
start = rss_kib()
for i in range(4):  # like saving a pipeline: a serialized copy a little larger each time
    if sys.argv[1] == "returned":
        with large_allocations_returned():
            data = srsly.msgpack_dumps({"small": list(range(1000)), "big": big + b"y" * i})
            del data
    else:
        data = srsly.msgpack_dumps({"small": list(range(1000)), "big": big + b"y" * i})
        del data
print((rss_kib() - start) // 1024)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator settings are Linux-only")
def test_large_copies_made_while_saving_are_returned_under_keep_freed_memory():
    """Serializing a biLM makes copies of its weights; kept on the heap, they would stay in
    the process for good (the original biLM's pipeline grew by 0.7 GB per save)."""

    def kept_mib(mode: str) -> int:
        result = subprocess.run([sys.executable, "-c", GROWING_COPIES, mode], capture_output=True, text=True, check=True)
        return int(result.stdout.split()[-1])

    assert kept_mib("kept") >= 64  # the test can see memory kept
    assert kept_mib("returned") < 16
