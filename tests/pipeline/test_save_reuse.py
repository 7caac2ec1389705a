"""Saving a frozen biLM again copies the file the component wrote instead of serializing the
biLM again (``spacy train`` saves at every evaluation); any change to the weights or the
settings serializes it again."""

import os
import pickle
import shutil
from pathlib import Path
from typing import List

import numpy as np
import pytest
import spacy
import srsly
from spacy.training import Example
from thinc.api import Adam

from spacy_elmo.bilm.model import ElmoBiLM
from spacy_elmo.layers.bilm_layer import elmo_shim
from spacy_elmo.pipeline.callbacks import create_atomic_saves
from spacy_elmo.pipeline.written_file import HELD, WrittenFile

TEXT = "She sat on the river bank."
MODEL = Path("elmo") / "model"

pytestmark = pytest.mark.skipif(not HELD, reason="saved files are held open for copying on POSIX systems only")


@pytest.fixture
def serializations(monkeypatch) -> List[int]:
    """Counts the biLM serializations (one entry per call)."""
    calls: List[int] = []
    original = ElmoBiLM.to_bytes

    def counted(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(ElmoBiLM, "to_bytes", counted)
    return calls


def _nlp(model_dir: Path, frozen: bool = True) -> spacy.Language:
    nlp = spacy.blank("en")
    nlp.add_pipe("elmo", config={"model": {"weights": str(model_dir)}, "frozen": frozen})
    return nlp


def _bilm(nlp: spacy.Language) -> ElmoBiLM:
    return elmo_shim(nlp.get_pipe("elmo").model.get_ref("bilm")).bilm


def test_saving_again_copies_the_file_and_the_copy_stands_alone(model_dir, tmp_path, serializations):
    nlp = _nlp(model_dir)
    expected = nlp(TEXT)._.elmo_layers
    create_atomic_saves()(nlp)  # every save into a fresh folder, as spacy train's
    for name in ("first", "second", "third"):
        nlp.to_disk(tmp_path / name)
    assert len(serializations) == 1
    first = (tmp_path / "first" / MODEL).read_bytes()
    for name in ("second", "third"):
        assert (tmp_path / name / MODEL).read_bytes() == first
        assert os.stat(tmp_path / name / MODEL).st_ino != os.stat(tmp_path / "first" / MODEL).st_ino
    shutil.rmtree(tmp_path / "first")
    shutil.rmtree(tmp_path / "second")
    shutil.rmtree(model_dir)
    np.testing.assert_array_equal(spacy.load(tmp_path / "third")(TEXT)._.elmo_layers, expected)


def test_saving_to_the_same_folder_again_writes_nothing(model_dir, tmp_path, serializations):
    nlp = _nlp(model_dir)
    nlp.to_disk(tmp_path / "pipeline")
    before = (tmp_path / "pipeline" / MODEL).stat()
    nlp.to_disk(tmp_path / "pipeline")
    after = (tmp_path / "pipeline" / MODEL).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(serializations) == 1


def test_weights_edited_in_place_are_serialized_again(model_dir, tmp_path, serializations):
    """Written through ``.data``, which torch does not count as a new version."""
    nlp = _nlp(model_dir)
    before = nlp(TEXT)._.elmo_layers
    nlp.to_disk(tmp_path / "first")
    _bilm(nlp).token_encoder.projection_bias.data.add_(1.0)
    nlp.to_disk(tmp_path / "second")
    assert len(serializations) == 2
    assert (tmp_path / "first" / MODEL).read_bytes() != (tmp_path / "second" / MODEL).read_bytes()
    after = nlp(TEXT)._.elmo_layers
    assert not np.allclose(after, before)  # the layer cache was dropped with the old weights
    np.testing.assert_array_equal(spacy.load(tmp_path / "second")(TEXT)._.elmo_layers, after)


def test_changed_settings_are_serialized_again(model_dir, tmp_path):
    nlp = _nlp(model_dir)
    nlp.to_disk(tmp_path / "first")
    nlp.get_pipe("elmo").cfg["gamma"] = 2.0
    nlp.to_disk(tmp_path / "second")
    assert srsly.msgpack_loads((tmp_path / "second" / MODEL).read_bytes())["settings"]["gamma"] == 2.0


def test_a_fine_tuned_bilm_is_serialized_at_every_save(model_dir, tmp_path, serializations):
    nlp = _nlp(model_dir, frozen=False)
    tok2vec = {
        "@architectures": "spacy-elmo.ElmoTok2Vec.v1",
        "width": 16,
        "elmo": {"@architectures": "spacy-elmo.ElmoListener.v1"},
        "embed": None,
    }
    parser = {"@architectures": "spacy.TransitionBasedParser.v2", "state_type": "ner", "hidden_width": 16}
    nlp.add_pipe("ner", config={"model": {**parser, "maxout_pieces": 2, "use_upper": True, "tok2vec": tok2vec}})
    examples = [Example.from_dict(nlp.make_doc("Alice lives in Paris ."), {"entities": [(0, 5, "PER"), (15, 20, "LOC")]})]
    nlp.initialize(lambda: examples * 4)
    optimizer = Adam(0.01, L2=0.0)
    nlp.to_disk(tmp_path / "first")
    for _ in range(3):
        nlp.update(examples * 4, sgd=optimizer)
    nlp.to_disk(tmp_path / "second")
    assert len(serializations) == 2
    assert (tmp_path / "first" / MODEL).read_bytes() != (tmp_path / "second" / MODEL).read_bytes()
    loaded = spacy.load(tmp_path / "second")
    np.testing.assert_array_equal(
        loaded.get_pipe("elmo")(loaded.make_doc(TEXT))._.elmo_layers, nlp.get_pipe("elmo")(nlp.make_doc(TEXT))._.elmo_layers
    )


def test_a_file_changed_on_disk_is_not_copied(model_dir, tmp_path, serializations):
    nlp = _nlp(model_dir)
    expected = nlp(TEXT)._.elmo_layers
    nlp.to_disk(tmp_path / "first")
    written = tmp_path / "first" / MODEL
    with open(written, "r+b") as file:  # in place: the same inode
        file.seek(100)
        file.write(b"\0" * 16)
    os.utime(written, ns=(written.stat().st_atime_ns, written.stat().st_mtime_ns + 1))
    nlp.to_disk(tmp_path / "second")
    assert len(serializations) == 2
    np.testing.assert_array_equal(spacy.load(tmp_path / "second")(TEXT)._.elmo_layers, expected)


def test_to_bytes_reads_the_written_file(model_dir, tmp_path, serializations):
    nlp = _nlp(model_dir)
    expected = nlp(TEXT)._.elmo_layers
    assert srsly.msgpack_loads(nlp.get_pipe("elmo").to_bytes())["model"]  # nothing written yet: serialized
    nlp.to_disk(tmp_path / "pipeline")
    data = nlp.get_pipe("elmo").to_bytes()
    assert len(serializations) == 2
    assert srsly.msgpack_loads(data)["model"] == (tmp_path / "pipeline" / MODEL).read_bytes()
    other = _nlp(model_dir)
    other.get_pipe("elmo").from_bytes(data)
    np.testing.assert_array_equal(other(TEXT)._.elmo_layers, expected)


def test_copies_of_a_written_file_hold_nothing(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"content")
    written = WrittenFile()
    written.remember(path, "key")
    assert written.read("key") == b"content" and written.read("other") is None
    copy = pickle.loads(pickle.dumps(written))
    assert copy.read("key") is None
    assert not copy.copy_to(tmp_path / "target", "key") and not (tmp_path / "target").exists()
    assert written.copy_to(tmp_path / "target", "key")
    assert (tmp_path / "target").read_bytes() == b"content"
