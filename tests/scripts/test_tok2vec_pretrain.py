"""scripts/tok2vec_pretrain.py: spacy pretrain in resumable chunks, whose weights ner_baseline_pretrain.cfg starts from."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import spacy

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tok2vec_pretrain_runs_in_resumable_chunks_and_its_weights_start_training(synthetic_corpus, tmp_path):
    """scripts/tok2vec_pretrain.py: spacy pretrain chunk by chunk; a rerun continues after the
    last finished chunk; ner_baseline_pretrain.cfg starts from model-last.bin and names
    --paths.init_tok2vec when it is missing."""
    from spacy.training.initialize import init_nlp

    from spacy_elmo.errors import ElmoConfigError

    words = "the a river bank money city old new walked saw near far".split()
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, size=8)) + " ." for _ in range(120)]
    (tmp_path / "sentences.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "t2v"

    def run(chunks):
        command = [sys.executable, str(REPO / "scripts" / "tok2vec_pretrain.py"), str(tmp_path / "sentences.txt"), str(out)]
        command += ["--config", str(REPO / "configs" / "ner_baseline_pretrain.cfg"), "--chunk-tokens", "300"]
        command += ["--chunks", str(chunks)]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return json.loads((out / "train.json").read_text())

    first = run(1)
    assert [c["chunk"] for c in first["chunks"]] == [0] and first["chunks"][0]["words"] >= 300
    chunk0 = (out / "chunk-000.bin").read_bytes()
    second = run(2)
    assert [c["chunk"] for c in second["chunks"]] == [0, 1], "the rerun should only add chunk 1"
    assert (out / "chunk-000.bin").read_bytes() == chunk0
    assert (out / "model-last.bin").read_bytes() == (out / "chunk-001.bin").read_bytes() != chunk0
    assert second["cpu_seconds"] > first["cpu_seconds"] > 0

    # Killed after chunk 1's weights were renamed into place but before train.json listed them,
    # with model-last.bin left behind: the rerun trains chunk 1 again and everything agrees.
    record = json.loads((out / "train.json").read_text())
    record["chunks"].pop()
    (out / "train.json").write_text(json.dumps(record))
    (out / "model-last.bin").write_bytes(chunk0)
    again = run(2)
    assert [c["chunk"] for c in again["chunks"]] == [0, 1]
    assert (out / "model-last.bin").read_bytes() == (out / "chunk-001.bin").read_bytes() != chunk0

    config = spacy.util.load_config(REPO / "configs" / "ner_baseline_pretrain.cfg")
    overrides = {"paths.train": str(synthetic_corpus), "paths.dev": str(synthetic_corpus)}
    with pytest.raises(ElmoConfigError, match=r"\[paths\] init_tok2vec is not set: pass --paths.init_tok2vec FILE"):
        init_nlp(config.merge(spacy.util.dot_to_dict(overrides)))
    overrides["paths.init_tok2vec"] = str(out / "model-last.bin")
    nlp = init_nlp(config.merge(spacy.util.dot_to_dict(overrides)))
    assert nlp.get_pipe("tok2vec").model.to_bytes() == (out / "model-last.bin").read_bytes()
