"""ELMoForManyLangs models: the reference's outputs, its quirks, saving, errors, and the plugin.

The fixtures under ``tests/fixtures/manylangs`` are tiny random models in the published layout
with what the reference package (``elmoformanylangs``) computed for them, written by
``scripts/make_manylangs_fixtures.py``; these tests need neither that package nor a network.
"""

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch

from spacy_elmo import ElmoBiLM
from spacy_elmo.bilm import manylangs_io, token_encoder
from spacy_elmo.bilm.manylangs import LexiconVocabulary, ManyLangsBiLM
from spacy_elmo.errors import ElmoModelNotFoundError, ElmoOptionsError, ElmoWeightsError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "manylangs"
MODELS = ("cnn_words", "cnn_chars")
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def sentences(name: str) -> List[List[str]]:
    return json.loads((FIXTURES / name / "sentences.json").read_text(encoding="utf-8"))


def expected(name: str) -> List[np.ndarray]:
    arrays = np.load(FIXTURES / name / "expected.npz")
    return [arrays[f"sentence_{i}"] for i in range(len(arrays.files))]


def assert_matches(ours: List[np.ndarray], reference: List[np.ndarray], **tolerance: float) -> None:
    assert [o.shape for o in ours] == [r.shape for r in reference]
    for o, r in zip(ours, reference):
        np.testing.assert_allclose(o, r, **(tolerance or TOLERANCE))


@pytest.fixture
def model_copy(tmp_path):
    """A writable copy of the word + character fixture model."""
    target = tmp_path / "model"
    shutil.copytree(FIXTURES / "cnn_words", target)
    return target


# ---------------------------------------------------------------------- the reference's outputs


@pytest.mark.parametrize("name", MODELS)
def test_outputs_match_the_reference(name):
    bilm = ElmoBiLM.from_pretrained(FIXTURES / name)
    assert isinstance(bilm, ManyLangsBiLM)
    assert bilm.options.n_output_layers == 3 and bilm.options.output_dim == 12
    assert_matches(bilm.embed_sentences(sentences(name)), expected(name))


@pytest.mark.parametrize("name", MODELS)
def test_outputs_do_not_depend_on_batching_or_the_token_cache(name):
    bilm = ElmoBiLM.from_pretrained(FIXTURES / name)
    reference = expected(name)
    assert_matches(bilm.embed_sentences(sentences(name), batch_size=2), reference)
    assert_matches([bilm.embed_sentences([s])[0] for s in sentences(name)], reference)  # cache warm


@pytest.mark.parametrize("name", MODELS)
def test_outputs_with_autograd_match_the_reference(name):
    """Training runs the plain convolutions and the differentiable LSTM steps."""
    bilm = ElmoBiLM.from_pretrained(FIXTURES / name)
    batch = sentences(name)
    ids, index, lengths = bilm.index_batch(batch)
    layers = bilm(torch.from_numpy(ids), torch.from_numpy(index), torch.from_numpy(lengths))
    assert layers.requires_grad
    ours = [layers[:, row, : len(s)].detach().numpy() for row, s in enumerate(batch)]
    assert_matches(ours, expected(name))


def test_char_cnn_by_matmul_matches_the_lookup(monkeypatch):
    """Lexicons too large for the lookup table (CJK) pool by one matmul, to the same result."""
    monkeypatch.setattr(token_encoder, "LOOKUP_TABLE_MAX_FLOATS", 0)
    bilm = ElmoBiLM.from_pretrained(FIXTURES / "cnn_words")
    assert not bilm.token_encoder.pools_by_lookup()
    assert_matches(bilm.embed_sentences(sentences("cnn_words")), expected("cnn_words"))


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_low_precision_stays_close(precision):
    """The opt-in precisions run on these models too. Random weights at width 6 are quantization's
    worst case (trained models are checked in test_inference_precision.py): measured int8 mean cosines
    per layer are 0.9998 / 0.95 / 0.98."""
    try:
        bilm = ElmoBiLM.from_pretrained(FIXTURES / "cnn_words", precision=precision)
    except ElmoOptionsError as err:
        pytest.skip(f"{precision} is not supported here: {err}")
    ours = np.concatenate(bilm.embed_sentences(sentences("cnn_words")), axis=1)
    reference = np.concatenate(expected("cnn_words"), axis=1)
    cosines = np.sum(ours * reference, axis=-1) / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(reference, axis=-1))
    assert cosines[0].min() > 0.99 and cosines.mean(axis=1).min() > 0.9
    assert not np.array_equal(ours, reference)


# ---------------------------------------------------------------------- the reference's quirks


def test_vocabulary_reproduces_the_reference_ids():
    chars = {"a": 0, "b": 1, "<bos>": 2, "<eos>": 3, "<oov>": 4, "<pad>": 5, "<bow>": 6, "<eow>": 7}
    words = {"<oov>": 0, "<pad>": 1, "ab": 2, "aaaaa": 3, "<bos>": 4}
    vocabulary = LexiconVocabulary(chars, words, max_chars=7)
    # Starts with <eow>'s id and ends with <bow>'s, as the reference's batching does.
    assert vocabulary.token_ids("ab") == [2, 7, 0, 1, 6, 5, 5, 5]
    # Unknown characters and words are <oov>; a token over max_chars - 2 is cut before both lookups.
    assert vocabulary.token_ids("aXb") == [0, 7, 0, 4, 1, 6, 5, 5]
    assert vocabulary.token_ids("aaaaaa") == [3, 7, 0, 0, 0, 0, 0, 6]
    # <bos> is one character whether it bounds the sentence or is a token of the text.
    assert vocabulary.token_ids("<bos>") == [4, 7, 2, 6, 5, 5, 5, 5]
    assert vocabulary.boundary_ids().tolist() == [vocabulary.token_ids("<bos>"), vocabulary.token_ids("<eos>")]
    ids, index, lengths = vocabulary.index_batch([["ab", "b", "ab"], [], ["b"]])
    assert ids.shape == (2, 8) and index.tolist() == [[0, 1, 0], [0, 0, 0], [1, 0, 0]] and lengths.tolist() == [3, 0, 1]
    without_words = LexiconVocabulary(chars, None, max_chars=7)
    assert without_words.token_ids("ab")[0] == 0


def test_lexicon_parsing_follows_the_reference(tmp_path):
    path = tmp_path / "char.dic"
    # A line holding only an id once stripped is U+3000's; the later id of a repeated token wins;
    # lines end wherever str.splitlines ends them; ids are read by int().
    path.write_text("a\t0\n\u3000\t1\nb\t2\na\t3\n c\t4\x85d\t 5\n", encoding="utf-8")
    assert manylangs_io.read_lexicon(path) == {"a": 3, "\u3000": 1, "b": 2, "c": 4, "d": 5}
    path.write_text("a\t0\n\nb\t1\n", encoding="utf-8")
    with pytest.raises(ElmoWeightsError, match=r"char\.dic, line 2: .*empty line"):
        manylangs_io.read_lexicon(path)
    path.write_text("a\tb\t0\n", encoding="utf-8")
    with pytest.raises(ElmoWeightsError, match=r"line 1: expected 'token<TAB>id', found 3"):
        manylangs_io.read_lexicon(path)


def test_fixture_lexicons_hold_the_quirks():
    chars = manylangs_io.read_lexicon(FIXTURES / "cnn_words" / "char.dic")
    words = manylangs_io.read_lexicon(FIXTURES / "cnn_words" / "word.dic")
    assert "\u3000" in chars and "ñ" not in chars
    assert words["ist"] == words["und"]  # listed twice: the later id
    assert "Donaudam" in words and "中文中文中文中文" in words


# ---------------------------------------------------------------------- saving and loading


def test_save_writes_the_published_layout_back_exactly(tmp_path):
    bilm = ElmoBiLM.from_pretrained(FIXTURES / "cnn_words")
    bilm.save(tmp_path / "saved")
    for name in ("token_embedder.pkl", "encoder.pkl"):
        original = torch.load(FIXTURES / "cnn_words" / name, weights_only=True)
        written = torch.load(tmp_path / "saved" / name, weights_only=True)
        assert original.keys() == written.keys()
        assert all(torch.equal(original[k], written[k]) for k in original)
    for name in ("char.dic", "word.dic"):
        assert manylangs_io.read_lexicon(tmp_path / "saved" / name) == manylangs_io.read_lexicon(FIXTURES / "cnn_words" / name)
    again = ElmoBiLM.from_pretrained(tmp_path / "saved")
    assert_matches(again.embed_sentences(sentences("cnn_words")), expected("cnn_words"))


def test_bytes_round_trip():
    bilm = ElmoBiLM.from_pretrained(FIXTURES / "cnn_chars")
    data = bilm.to_bytes()
    restored = ElmoBiLM.from_bytes(data)
    assert isinstance(restored, ManyLangsBiLM)
    first = bilm.embed_sentences(sentences("cnn_chars"))
    assert all(np.array_equal(a, b) for a, b in zip(first, restored.embed_sentences(sentences("cnn_chars"))))
    assert restored.to_bytes() == data


def test_a_config_named_by_absolute_path_is_found_by_its_file_name():
    config = json.loads((FIXTURES / "cnn_chars" / "config.json").read_text())
    assert Path(config["config_path"]).is_absolute()
    assert manylangs_io.read_network(FIXTURES / "cnn_chars").file_name == "cnn_tiny_chars.json"


def test_published_network_is_known_without_its_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"config_path": "cnn_50_100_512_4096_sample.json"}))
    network = manylangs_io.read_network(tmp_path)
    assert (network.lstm_dim, network.projection_dim, network.word_dim, network.char_dim) == (4096, 512, 100, 50)


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize("missing", ["encoder.pkl", "token_embedder.pkl", "char.dic", "config.json"])
def test_missing_file_is_named(model_copy, missing):
    (model_copy / missing).unlink()
    with pytest.raises(ElmoModelNotFoundError, match=missing.replace(".", r"\.")):
        ElmoBiLM.from_pretrained(model_copy)


def test_missing_word_lexicon_is_named(model_copy):
    (model_copy / "word.dic").unlink()
    with pytest.raises(ElmoWeightsError, match=r"no word\.dic.*word_dim=7"):
        ElmoBiLM.from_pretrained(model_copy)


def test_mismatched_tensor_is_named_with_its_shapes(model_copy):
    state = torch.load(model_copy / "encoder.pkl", weights_only=True)
    state["backward_layer_1.state_projection.weight"] = torch.zeros(6, 11)
    torch.save(state, model_copy / "encoder.pkl")
    with pytest.raises(
        ElmoWeightsError,
        match=r"encoder\.pkl: tensor 'backward_layer_1\.state_projection\.weight' has shape \(6, 11\) but .* needs \(6, 10\)",
    ):
        ElmoBiLM.from_pretrained(model_copy)


def test_missing_and_extra_tensors_are_named(model_copy):
    state = torch.load(model_copy / "token_embedder.pkl", weights_only=True)
    del state["highways._layers.1.bias"]
    torch.save(state, model_copy / "token_embedder.pkl")
    with pytest.raises(ElmoWeightsError, match=r"tensor 'highways\._layers\.1\.bias' is missing.*\(28,\)"):
        ElmoBiLM.from_pretrained(model_copy)
    state["highways._layers.1.bias"] = torch.zeros(28)
    state["spare.weight"] = torch.zeros(2)
    torch.save(state, model_copy / "token_embedder.pkl")
    with pytest.raises(ElmoWeightsError, match=r"'spare\.weight' \(\(2,\)\) is not part of the network"):
        ElmoBiLM.from_pretrained(model_copy)


def test_lexicon_that_does_not_fit_the_embedding_is_an_error(model_copy):
    with (model_copy / "char.dic").open("a", encoding="utf-8") as out:
        out.write("ж\t58\n")  # one more entry than the 59-row table holds... as a new row
    with pytest.raises(ElmoWeightsError, match=r"char_emb_layer\.embedding\.weight' has shape \(59, 5\) but .* needs \(60, 5\)"):
        ElmoBiLM.from_pretrained(model_copy)


def test_lexicon_without_special_entries_is_an_error(model_copy):
    lines = (model_copy / "char.dic").read_text(encoding="utf-8").splitlines()
    (model_copy / "char.dic").write_text("\n".join(line for line in lines if not line.startswith("<pad>")) + "\n")
    with pytest.raises(ElmoWeightsError, match=r"char\.dic has no <pad> entry"):
        ElmoBiLM.from_pretrained(model_copy)


def test_pickled_code_is_never_run(model_copy):
    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    (model_copy / "encoder.pkl").write_bytes(pickle.dumps({"forward_layer_0.input_linearity.weight": Payload()}, protocol=2))
    with pytest.raises(ElmoWeightsError, match=r"encoder\.pkl cannot be loaded as a PyTorch state dict"):
        ElmoBiLM.from_pretrained(model_copy)


def test_unsupported_network_is_named(model_copy):
    path = model_copy / "cnn_tiny.json"
    config = json.loads(path.read_text())
    config["token_embedder"]["name"] = "lstm"
    path.write_text(json.dumps(config))
    with pytest.raises(ElmoOptionsError, match=r"cnn_tiny\.json: 'token_embedder\.name' is 'lstm'"):
        ElmoBiLM.from_pretrained(model_copy)


def test_network_config_that_is_not_there_is_named(model_copy):
    (model_copy / "cnn_tiny.json").unlink()
    with pytest.raises(ElmoModelNotFoundError, match=r"'config_path' 'cnn_tiny\.json' names a network config that is not there"):
        ElmoBiLM.from_pretrained(model_copy)


# ---------------------------------------------------------------------- the spaCy plugin

GERMAN = [
    ("Die Straße in Köln ist schön .", [(14, 18, "LOC")]),
    ("Anna wohnt in Berlin .", [(0, 4, "PER"), (14, 20, "LOC")]),
    ("Der Kapitän fährt nach Wien .", [(23, 27, "LOC")]),
    ("Peter mag Café crème .", [(0, 5, "PER")]),
]


def german_pipeline(model_dir: Path, **component):
    import spacy

    nlp = spacy.blank("de")
    nlp.add_pipe("elmo", config={"model": {"weights": str(model_dir)}, **component})
    return nlp


def test_component_in_a_german_pipeline(tmp_path):
    from spacy.tokens import Doc

    nlp = german_pipeline(FIXTURES / "cnn_words")
    batch = [s for s in sentences("cnn_words") if s]
    reference = [r for r in expected("cnn_words") if r.size]
    docs = list(nlp.pipe(Doc(nlp.vocab, words=words) for words in batch))
    for doc, layers in zip(docs, reference):
        np.testing.assert_allclose(doc._.elmo_layers, layers, **TOLERANCE)
        np.testing.assert_allclose(doc.tensor, layers.mean(axis=0), **TOLERANCE)
        np.testing.assert_array_equal(doc[0].vector, doc.tensor[0])
    # Saved with the model inside: the pipeline loads without the model directory.
    model_dir = tmp_path / "model"
    shutil.copytree(FIXTURES / "cnn_words", model_dir)
    nlp = german_pipeline(model_dir)
    nlp.initialize()
    before = nlp("Die Straße ist schön .").tensor
    nlp.to_disk(tmp_path / "pipeline")
    shutil.rmtree(model_dir)
    import spacy

    reloaded = spacy.load(tmp_path / "pipeline")
    np.testing.assert_array_equal(reloaded("Die Straße ist schön .").tensor, before)
    assert isinstance(reloaded.get_pipe("elmo").model.get_ref("bilm").shims[0].bilm, ManyLangsBiLM)
    fresh = spacy.blank("de")
    fresh.add_pipe("elmo")  # the shipped English biLM, replaced by the bytes' model
    fresh.from_bytes(reloaded.to_bytes())
    np.testing.assert_array_equal(fresh("Die Straße ist schön .").tensor, before)


def _ner_pipeline(model_dir: Path, frozen: bool):
    import spacy

    config = spacy.util.load_config(Path(__file__).resolve().parents[2] / "configs" / "ner_elmo.cfg")
    # The layer store off: with it, a frozen biLM's layers are served at float16 after training
    # (bounded in tests/layers/test_layer_store.py), and this test compares a reload at 1e-6.
    overrides = {
        "nlp.lang": "de",
        "components.elmo.model.weights": str(model_dir),
        "components.elmo.model.layer_store": "off",
        "components.elmo.frozen": frozen,
    }
    return spacy.util.load_model_from_config(config.merge(spacy.util.dot_to_dict(overrides)), auto_fill=True, validate=True)


def _german_examples(nlp):
    from spacy.training import Example

    return [Example.from_dict(nlp.make_doc(text), {"entities": entities}) for text, entities in GERMAN]


@pytest.mark.parametrize("frozen", [True, False])
def test_ner_training_in_german(tmp_path, frozen):
    """A tiny German NER run on the model; fine-tuning changes its weights, which are saved."""
    from thinc.api import fix_random_seed

    nlp = _ner_pipeline(FIXTURES / "cnn_words", frozen)
    examples = _german_examples(nlp)
    fix_random_seed(0)
    optimizer = nlp.initialize(lambda: examples)
    bilm = nlp.get_pipe("elmo").model.get_ref("bilm").shims[0].bilm
    before = bilm.to_arrays()
    losses: List[float] = []
    for _ in range(15):
        step = {}
        nlp.update(examples, sgd=optimizer, losses=step, drop=0.0)
        losses.append(step["ner"])
    assert max(losses[-3:]) < losses[0]
    after = bilm.to_arrays()
    changed = [name for name in before if not np.array_equal(before[name], after[name])]
    if frozen:
        assert changed == []
    else:
        assert "token_embedder/word_emb_layer.embedding.weight" in changed
        assert any(name.startswith("encoder/backward_layer_1") for name in changed)
    texts = [text for text, _ in GERMAN]
    predicted = [doc.tensor for doc in nlp.pipe(texts)]
    nlp.to_disk(tmp_path / "pipeline")
    import spacy

    reloaded = spacy.load(tmp_path / "pipeline")
    for doc, tensor in zip(reloaded.pipe(texts), predicted):
        np.testing.assert_allclose(doc.tensor, tensor, rtol=1e-6, atol=1e-6)


def test_spacy_train_cli_in_german(tmp_path):
    import subprocess
    import sys

    import spacy
    from spacy.tokens import DocBin

    nlp = spacy.blank("de")
    docs = [example.reference for example in _german_examples(nlp)]
    DocBin(docs=docs).to_disk(tmp_path / "train.spacy")
    repo = Path(__file__).resolve().parents[2]
    command = [
        sys.executable,
        "-m",
        "spacy",
        "train",
        str(repo / "configs" / "ner_elmo.cfg"),
        "--output",
        str(tmp_path / "out"),
        "--nlp.lang",
        "de",
        "--paths.train",
        str(tmp_path / "train.spacy"),
        "--paths.dev",
        str(tmp_path / "train.spacy"),
        "--components.elmo.model.weights",
        str(FIXTURES / "cnn_words"),
        "--training.max_steps",
        "4",
        "--training.eval_frequency",
        "2",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    trained = spacy.load(tmp_path / "out" / "model-best")
    assert trained.lang == "de" and trained("Anna wohnt in Berlin .").tensor.shape == (5, 12)


def test_embed_command_reads_the_model_directory(tmp_path):
    import h5py

    from spacy_elmo.__main__ import main as cli_main

    lines = [" ".join(s) for s in sentences("cnn_words") if s]
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.hdf5"
    assert cli_main(["embed", str(source), str(out), "--weights", str(FIXTURES / "cnn_words"), "--all", "--no-progress"]) == 0
    reference = [r for r in expected("cnn_words") if r.size]
    with h5py.File(out, "r") as h5:
        for i, layers in enumerate(reference):
            np.testing.assert_allclose(h5[str(i)][()], layers, **TOLERANCE)


def test_init_config_from_a_german_spacy_config(tmp_path):
    """``spacy init config --lang de -p ner`` then ``init-config --weights DIR``: a German ELMo NER config."""
    import spacy
    from spacy.cli.init_config import init_config as spacy_init_config

    from spacy_elmo.init_config import init_config

    spacy_init_config(lang="de", pipeline=["ner"]).to_disk(tmp_path / "base.cfg")
    init_config(str(tmp_path / "base.cfg"), str(tmp_path / "ner_de.cfg"), weights=str(FIXTURES / "cnn_words"))
    config = spacy.util.load_config(tmp_path / "ner_de.cfg")
    assert config["nlp"]["lang"] == "de" and config["components"]["elmo"]["model"]["weights"] == str(FIXTURES / "cnn_words")
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    examples = _german_examples(nlp)
    nlp.initialize(lambda: examples)
    assert nlp("Anna wohnt in Berlin .")._.elmo_layers.shape == (3, 5, 12)
