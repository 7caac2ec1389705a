"""Low-precision inference (bf16, int8): outputs, accuracy against fp32, errors, what is saved.

Accuracy uses the shipped default biLM, whose trained weights give realistic activations
(random weights do not). Thresholds per precision (:data:`THRESHOLDS`, mean and worst-token
cosine per layer) sit about ten times the measured distance from 1 on these sentences:
bf16 >= 0.99999 / 0.9999; int8 >= 0.99947 / 0.9981 with 7-bit activations (AVX2 CPU without
VNNI), closer with 8 bits. A threshold failing means a real regression, not rounding luck.
"""

import copy

import h5py
import numpy as np
import pytest
import spacy
import torch
from spacy.tokens import Doc

from spacy_elmo import ElmoBiLM
from spacy_elmo.bilm import inference_precision
from spacy_elmo.bilm.pretrained import DEFAULT_MODEL_DIR
from spacy_elmo.errors import ElmoOptionsError

needs_bf16 = pytest.mark.skipif(
    not inference_precision.cpu_has_bf16(),
    reason="this CPU has no bfloat16 instructions (AVX512-BF16 or AMX): bf16 is refused here",
)
LOW = (pytest.param("bf16", marks=needs_bf16), "int8")
THRESHOLDS = {"bf16": (0.9999, 0.999), "int8": (0.999, 0.997)}
"""Per precision: the lowest mean and worst-token cosine to fp32 allowed in any layer."""
SENTENCES = [
    s.split()
    for s in (
        "The European Commission said on Thursday it disagreed with German advice to consumers .",
        "She sat on the river bank and watched the boats go by .",
        "Hi",
        "Peter Blackburn BRUSSELS 1996-08-22",
        "Germany 's representative to the European Union 's veterinary committee Werner Zwingmann said on Wednesday consumers should buy sheepmeat from countries other than Britain until the scientific advice was clearer .",
    )
]


def default_bilm(**kwargs) -> ElmoBiLM:
    return ElmoBiLM.from_files(DEFAULT_MODEL_DIR / "options.json", DEFAULT_MODEL_DIR / "weights.hdf5", **kwargs)


@pytest.fixture(scope="module")
def reference():
    return default_bilm().embed_sentences(SENTENCES)


def cosines(ours, reference):
    """Per layer: every token's cosine with its reference vector."""
    result = []
    for layer in range(reference[0].shape[0]):
        a = np.concatenate([o[layer] for o in ours]).astype(np.float64)
        b = np.concatenate([r[layer] for r in reference]).astype(np.float64)
        result.append(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))
    return result


def assert_close_to_fp32(ours, reference, precision):
    assert [o.shape for o in ours] == [r.shape for r in reference]
    assert all(o.dtype == np.float32 for o in ours)
    lowest_mean, lowest_worst = THRESHOLDS[precision]
    for layer_cosines in cosines(ours, reference):
        assert layer_cosines.mean() >= lowest_mean
        assert layer_cosines.min() >= lowest_worst
    # The mode is really in effect: low precision is not bit-identical to fp32.
    assert max(float(np.abs(o - r).max()) for o, r in zip(ours, reference)) > 0


@pytest.mark.parametrize("precision", LOW)
def test_bilm_precision_close_to_fp32(precision, reference):
    bilm = default_bilm(precision=precision)
    assert bilm.inference_precision == precision
    first = bilm.embed_sentences(SENTENCES)
    assert_close_to_fp32(first, reference, precision)
    again = bilm.embed_sentences(SENTENCES[::-1])[::-1]  # token cache warm, other batch order
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


@pytest.mark.parametrize("precision", LOW)
def test_to_precision_round_trip_back_to_exact_fp32(precision, reference):
    bilm = default_bilm().to_precision(precision)
    assert_close_to_fp32(bilm.embed_sentences(SENTENCES), reference, precision)
    back = bilm.to_precision("fp32").embed_sentences(SENTENCES)
    assert all(np.array_equal(a, b) for a, b in zip(back, reference))


@pytest.mark.parametrize("precision", LOW)
def test_autograd_runs_fp32_and_saved_weights_stay_fp32(tmp_path, precision):
    bilm = default_bilm(precision=precision)
    arrays = default_bilm().to_arrays()
    bilm.embed_sentences(SENTENCES)
    bilm.save(tmp_path / "saved")
    with h5py.File(tmp_path / "saved" / "weights.hdf5", "r") as f:
        stored = {}
        f.visititems(lambda name, obj: stored.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    assert set(stored) == set(arrays)
    for name, array in arrays.items():
        assert stored[name].dtype == np.float32 and np.array_equal(stored[name], array), name
    # With autograd recording, the forward pass is the exact float32 one.
    from spacy_elmo.chars import index_batch

    char_ids, token_index, lengths, _ = index_batch(SENTENCES[:2], bilm.options.max_characters_per_token)
    inputs = [torch.from_numpy(a) for a in (char_ids, token_index, lengths)]
    with torch.enable_grad():
        trained_path = bilm(*inputs)
    exact = default_bilm()(*inputs)
    assert trained_path.requires_grad and torch.equal(trained_path.detach(), exact.detach())


def test_weights_changed_in_place_are_picked_up():
    """The prepared low-precision weights must follow the parameters (no stale copies)."""
    bilm = default_bilm(precision="int8")
    before = bilm.embed_sentences(SENTENCES[:2])
    with torch.no_grad():
        bilm.lstm.layers[1].projection.mul_(0.5)
    after = bilm.embed_sentences(SENTENCES[:2])
    expected = default_bilm()
    with torch.no_grad():
        expected.lstm.layers[1].projection.mul_(0.5)
    exact = expected.embed_sentences(SENTENCES[:2])
    assert not np.allclose(after[0][2], before[0][2], atol=1e-3)
    assert all(c.mean() >= 0.999 for c in cosines(after, exact))


def test_deepcopy_drops_prepared_weights(reference):
    bilm = default_bilm(precision="int8")
    bilm.embed_sentences(SENTENCES[:1])
    clone = copy.deepcopy(bilm)
    assert clone._kernels is None
    assert_close_to_fp32(clone.embed_sentences(SENTENCES), reference, "int8")


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ElmoOptionsError, match=r"precision must be one of 'fp32', 'bf16', 'int8', got 'fp16'"):
        default_bilm(precision="fp16")
    with pytest.raises(ElmoOptionsError, match="got 'half'"):
        default_bilm().to_precision("half")


def test_unsupported_hardware_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(inference_precision, "cpu_has_bf16", lambda: False)
    with pytest.raises(
        ElmoOptionsError, match=r"precision = 'bf16' needs a CPU with bfloat16 instructions.*Use 'int8' or 'fp32'"
    ):
        default_bilm(precision="bf16")
    with pytest.raises(ElmoOptionsError, match="'int8' runs on the CPU only"):
        inference_precision.check_supported("int8", torch.device("cuda"))


def elmo_nlp(precision: str):
    nlp = spacy.blank("en")
    nlp.add_pipe("elmo", config={"model": {"precision": precision, "layer_cache_mb": 0}})
    nlp.initialize()
    return nlp


@pytest.mark.parametrize("precision", LOW)
def test_component_precision(precision, reference, tmp_path):
    nlp = elmo_nlp(precision)
    docs = [Doc(nlp.vocab, words=words) for words in SENTENCES]
    layers = [doc._.elmo_layers for doc in nlp.pipe(docs)]
    assert all(array.dtype == np.float32 for array in layers)
    assert_close_to_fp32(layers, reference, precision)
    # Saved pipelines hold the float32 weights; loading keeps the configured precision.
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    reloaded = [doc._.elmo_layers for doc in loaded.pipe(Doc(loaded.vocab, words=w) for w in SENTENCES)]
    assert all(np.array_equal(a, b) for a, b in zip(reloaded, layers))
    # Overriding the precision at load time applies (bf16-rounded stored weights would be off by ~1e-2).
    exact = spacy.load(tmp_path / "pipeline", config={"components": {"elmo": {"model": {"precision": "fp32"}}}})
    exact_layers = [doc._.elmo_layers for doc in exact.pipe(Doc(exact.vocab, words=w) for w in SENTENCES)]
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(exact_layers, reference))


def test_component_unknown_precision_names_the_setting():
    nlp = spacy.blank("en")
    with pytest.raises(ElmoOptionsError, match=r"ElmoBiLM.v1 .*\[components.<name>.model\].*: precision must be one of"):
        nlp.add_pipe("elmo", config={"model": {"precision": "float16"}})


def test_embed_command_precision(tmp_path, capsys, reference):
    from spacy_elmo.__main__ import main as cli_main

    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(" ".join(words) for words in SENTENCES) + "\n", encoding="utf-8")
    out = tmp_path / "int8.hdf5"
    assert cli_main(["embed", str(source), str(out), "--precision", "int8", "--no-progress"]) == 0
    with h5py.File(out, "r") as h5:
        stored = [h5[str(i)][()] for i in range(len(SENTENCES))]
    assert_close_to_fp32(stored, reference, "int8")
    assert cli_main(["embed", str(source), str(tmp_path / "bad.hdf5"), "--precision", "fp16", "--no-progress"]) == 1
    assert "--precision must be one of 'fp32', 'bf16', 'int8', got 'fp16'" in capsys.readouterr().err
    assert not (tmp_path / "bad.hdf5").exists()
