"""``spacy-elmo.atomic_saves.v1``: ``spacy train`` killed at any moment leaves ``model-last``
and ``model-best`` each absent or complete, with ``meta.json`` scores that belong to the
weights beside them (spaCy alone writes file by file, and deletes ``model-best`` before
copying the new one)."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import spacy
from spacy.training import Corpus

from spacy_elmo.files import replace_directory, restore_directory
from spacy_elmo.pipeline.callbacks import BEST, LAST, _TrainingLoopShutil, create_atomic_saves

REPO = Path(__file__).resolve().parents[2]


def _pipeline(model_dir: Path):
    nlp = spacy.blank("en")
    nlp.add_pipe("elmo", config={"model": {"weights": str(model_dir)}})
    nlp.initialize()
    return create_atomic_saves()(nlp)


def test_replace_directory_swaps_whole_folders(tmp_path):
    target, new = tmp_path / "model-last", tmp_path / "new"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    replace_directory(new, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"] and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-last"]


def test_a_crash_between_the_fallback_renames_is_undone(tmp_path):
    target = tmp_path / "model-best"
    aside = tmp_path / ".model-best.previous"
    aside.mkdir()
    (aside / "meta.json").write_text("{}")
    assert restore_directory(target) and (target / "meta.json").is_file() and not aside.exists()
    assert not restore_directory(target)


def test_a_save_that_dies_midway_keeps_the_previous_model_last(model_dir, tmp_path, monkeypatch):
    tmp_path = tmp_path / "out"
    nlp = _pipeline(model_dir)
    nlp.to_disk(tmp_path / LAST)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / LAST).rglob("*") if p.is_file()}
    real = spacy.language.Language.to_disk

    def dies_after_the_first_component(self, path, **kwargs):
        real(self, path, exclude=["elmo"])
        raise OSError("killed while writing the elmo component")

    monkeypatch.setattr(spacy.language.Language, "to_disk", dies_after_the_first_component)
    with pytest.raises(OSError, match="killed while writing"):
        nlp.to_disk(tmp_path / LAST)
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / LAST).rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST]


def test_a_copy_to_model_best_that_dies_midway_keeps_the_previous_model_best(model_dir, tmp_path, monkeypatch):
    tmp_path = tmp_path / "out"
    nlp = _pipeline(model_dir)
    nlp.to_disk(tmp_path / LAST)
    loop_shutil = _TrainingLoopShutil()
    loop_shutil.rmtree(tmp_path / BEST)  # spaCy's delete of model-best waits for the copy
    loop_shutil.copytree(tmp_path / LAST, tmp_path / BEST)
    before = (tmp_path / BEST / "meta.json").read_bytes()

    def dies_midway(source, target, **kwargs):
        Path(target).mkdir()
        shutil.copy(Path(source) / "meta.json", Path(target) / "meta.json")
        raise OSError("killed while copying")

    monkeypatch.setattr(shutil, "copytree", dies_midway)
    loop_shutil.rmtree(tmp_path / BEST)
    with pytest.raises(OSError, match="killed while copying"):
        loop_shutil.copytree(tmp_path / LAST, tmp_path / BEST)
    assert (tmp_path / BEST / "meta.json").read_bytes() == before
    assert spacy.load(tmp_path / BEST).pipe_names == ["elmo"]


def _train_command(model_dir: Path, corpus: Path, out: Path):
    return [
        sys.executable, "-m", "spacy", "train", str(REPO / "configs" / "ner_elmo.cfg"), "--output", str(out),
        "--paths.train", str(corpus), "--paths.dev", str(corpus),
        "--components.elmo.model.weights", str(model_dir), "--components.elmo.model.options", "null",
        "--training.max_steps", "100000", "--training.eval_frequency", "2", "--nlp.batch_size", "8",
    ]  # fmt: skip


@pytest.mark.slow
def test_ten_random_kills_during_spacy_train_leave_loadable_folders_with_their_scores(model_dir, synthetic_corpus, tmp_path):
    rng = random.Random(0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    examples = None
    checked = 0
    for run in range(10):
        out = tmp_path / f"run{run}"
        process = subprocess.Popen(
            _train_command(model_dir, synthetic_corpus, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while not (out / LAST / "meta.json").exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 3.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        for name in (LAST, BEST):
            folder = out / name
            if not folder.exists():
                continue
            nlp = spacy.load(folder)
            examples = examples or list(Corpus(synthetic_corpus)(nlp))
            scores = nlp.evaluate(examples)
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            assert scores["ents_f"] == pytest.approx(meta["performance"]["ents_f"], abs=1e-9), (run, name)
            checked += 1
    assert checked >= 10
