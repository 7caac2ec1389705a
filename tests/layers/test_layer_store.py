"""The on-disk layer store of a frozen biLM: layers computed once per (biLM, token sequence),
read back by later epochs, runs and configs, bounded, shared safely, and never read back wrong."""

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import spacy
from spacy.training import Example

from conftest import synthetic_docs, tiny_options, write_tiny_model
from spacy_elmo.errors import ElmoOptionsError
from spacy_elmo.layers import bilm_layer as layer_module
from spacy_elmo.layers.layer_store import (
    FLOAT16_RELATIVE_ERROR,
    SUFFIX,
    LayerStore,
    decode_entry,
    encode_entry,
    sequence_key,
)

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


def _nlp(model_dir, store_dir, *, ner=True, **model):
    """A frozen ``elmo`` (+ ``ner`` listening to it) whose layer store lives in ``store_dir``."""
    nlp = spacy.blank("en")
    settings = {"weights": str(model_dir), "layer_store_dir": str(store_dir), "layer_cache_mb": 0, **model}
    nlp.add_pipe("elmo", config={"model": settings})
    if ner:
        config = spacy.util.load_config(REPO / "configs" / "ner_elmo.cfg")
        ner = {key: value for key, value in config["components"]["ner"].items() if key != "factory"}
        nlp.add_pipe("ner", config=ner)
    return nlp


def _examples(nlp, n=24, seed=0):
    return [Example(nlp.make_doc(doc.text), doc) for doc in synthetic_docs(nlp.vocab, n=n, seed=seed)]


def _sequences(examples):
    return [[token.text for token in eg.predicted] for eg in examples]


def _bilm(nlp):
    return nlp.get_pipe("elmo").model.get_ref("bilm")


def _count_runs(monkeypatch):
    """Record the token sequences of every biLM call the layer makes."""
    calls = []
    real_run = layer_module._run

    def counting(model, sequences, is_train):
        calls.append([list(s) for s in sequences])
        return real_run(model, sequences, is_train)

    monkeypatch.setattr(layer_module, "_run", counting)
    return calls


def _exact_layers(model_dir, sequences, **model):
    """The biLM's float32 layers, store and caches off."""
    nlp = _nlp(model_dir, "/nonexistent", ner=False, layer_store="off", **model)
    nlp.initialize()
    return layer_module._run(_bilm(nlp), sequences, False)[0]


def _entry_files(store_dir):
    return sorted(Path(store_dir).rglob(f"*{SUFFIX}"))


def _within_float16(stored, exact):
    bound = np.abs(exact) * FLOAT16_RELATIVE_ERROR + 2.0**-24 + 1e-5
    assert stored.dtype == np.float32 and stored.shape == exact.shape
    assert np.all(np.abs(stored - exact) <= bound)


def _train(nlp, examples, epochs=2, batch=4):
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(epochs):
        for start in range(0, len(examples), batch):
            nlp.update(examples[start : start + batch], sgd=optimizer, drop=0.1)
    return optimizer


def test_round_trip_equals_the_direct_forward_within_the_float16_bound(model_dir, tmp_path):
    nlp = _nlp(model_dir, tmp_path / "store")
    examples = _examples(nlp)
    nlp.initialize(lambda: examples)
    sequences = _sequences(examples)
    exact = _exact_layers(model_dir, sequences)
    again = _nlp(model_dir, tmp_path / "store", layer_store="always")
    again.initialize()
    stored = layer_module._frozen_forward(_bilm(again), sequences)
    for s, e in zip(stored, exact):
        _within_float16(s, e)
        assert np.abs(s - e).max() > 0  # really float16: float32 would be exact
    exact32 = _nlp(model_dir, tmp_path / "store32", layer_store_float16=False)
    exact32.initialize(lambda: examples)
    read32 = _nlp(model_dir, tmp_path / "store32", layer_store="always", layer_store_float16=False)
    read32.initialize()
    for s, e in zip(layer_module._frozen_forward(_bilm(read32), sequences), exact):
        np.testing.assert_allclose(s, e, atol=1e-6, rtol=1e-5)


def test_entries_round_trip_bit_exactly_and_reject_every_damage():
    layers = np.random.default_rng(0).standard_normal((3, 5, 8)).astype(np.float16)
    data = encode_entry(layers)
    np.testing.assert_array_equal(decode_entry(data), layers)
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        assert decode_entry(data[:cut]) is None
    for position in range(0, len(data), 7):
        flipped = bytearray(data)
        flipped[position] ^= 0x10
        assert decode_entry(bytes(flipped)) is None, position


def test_later_runs_seeds_and_configs_reuse_it_without_calling_the_bilm(model_dir, tmp_path, monkeypatch):
    store = tmp_path / "store"
    first = _nlp(model_dir, store)
    examples = _examples(first)
    _train(first, examples)
    layers_first = _bilm(first)
    expected = layer_module._frozen_forward(layers_first, _sequences(examples), is_train=True)
    n_entries = len(_entry_files(store))
    assert n_entries == len({tuple(s) for s in _sequences(examples)})

    calls = _count_runs(monkeypatch)
    for seed, cache_mb in ((1, 0), (2, 64)):
        spacy.util.fix_random_seed(seed)
        nlp = _nlp(model_dir, store, layer_cache_mb=cache_mb)
        nlp.get_pipe("ner").cfg["update_with_oracle_cut_size"] = 50 + seed  # another downstream config
        _train(nlp, _examples(nlp), epochs=3, batch=3)
        got = layer_module._frozen_forward(_bilm(nlp), _sequences(examples), is_train=True)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)  # the same inputs whatever was already stored
    assert calls == []
    assert len(_entry_files(store)) == n_entries


def test_changed_weights_or_precision_are_not_served_old_layers(model_dir, tmp_path, monkeypatch):
    store = tmp_path / "store"
    nlp = _nlp(model_dir, store)
    examples = _examples(nlp, n=8)
    nlp.initialize(lambda: examples)
    other = write_tiny_model(tmp_path / "other-weights", tiny_options(), seed=1)
    calls = _count_runs(monkeypatch)
    changed = _nlp(other, store)
    changed.initialize(lambda: examples)
    assert calls, "new weights must be computed, not read from the old ones' entries"
    sequences = _sequences(examples)
    got = layer_module._frozen_forward(_bilm(changed), sequences, is_train=True)
    for g, e in zip(got, _exact_layers(other, sequences)):
        _within_float16(g, e)
    calls.clear()
    _nlp(model_dir, store, precision="int8").initialize(lambda: examples)
    assert calls, "int8 layers are not the float32 ones: another fingerprint"


def test_weights_changed_in_place_change_the_fingerprint(model_dir, tmp_path):
    nlp = _nlp(model_dir, tmp_path / "store", ner=False)
    nlp.initialize()
    shim = layer_module.elmo_shim(_bilm(nlp))
    before = shim.fingerprint
    with shim.lock:
        next(shim.bilm.parameters()).data[0] += 1.0
        shim._weights_changed()
    assert shim.fingerprint != before


def test_lru_eviction_keeps_the_store_under_its_bound(tmp_path):
    entry = np.ones((3, 10, 16), dtype=np.float16)
    size = len(encode_entry(entry))
    store = LayerStore(tmp_path, max_bytes=10 * size)
    fingerprint = "f" * 64
    keys = [sequence_key(fingerprint, [str(i)]) for i in range(30)]
    now = time.time()
    for i, key in enumerate(keys[:10]):
        store.put(fingerprint, key, entry)
        os.utime(store.path(fingerprint, key), (now - 1000 + i, now - 1000 + i))
    assert store.get(fingerprint, keys[0], 10) is not None  # used: now the most recent
    for key in keys[10:15]:
        store.put(fingerprint, key, entry)
    assert store.contains(fingerprint, keys[0]) and not store.contains(fingerprint, keys[1])
    for key in keys[15:]:
        store.put(fingerprint, key, entry)
        assert store.size() <= store.max_bytes
    assert store.evicted >= 20 and store.contains(fingerprint, keys[-1])
    assert not store.put(fingerprint, "big", np.ones((3, 200, 16), dtype=np.float16))


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from spacy_elmo.layers.layer_store import LayerStore
    store = LayerStore(sys.argv[1], max_bytes=1 << 30)
    value = float(sys.argv[2])
    for _ in range(int(sys.argv[3])):
        for key in ("aa" * 20, "bb" * 20, "cc" * 20):
            store.put("f" * 64, key, np.full((3, 400, 64), value, dtype=np.float16))
    """
)


def test_concurrent_writers_never_leave_or_show_a_mixed_entry(tmp_path):
    """Two processes write the same keys with different values while this one reads: every
    read is absent or one writer's whole array."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), value, "150"], env=env) for value in ("1", "2")]
    store = LayerStore(tmp_path, max_bytes=1 << 30)
    seen = set()
    while any(w.poll() is None for w in writers):
        for key in ("aa" * 20, "bb" * 20, "cc" * 20):
            layers = store.get("f" * 64, key, 400)
            if layers is not None:
                values = set(np.unique(layers).tolist())
                assert values in ({1.0}, {2.0}), values
                seen |= values
    assert all(w.wait() == 0 for w in writers)
    assert store.corrupt == 0 and seen
    assert len(list(tmp_path.rglob("*.tmp-*"))) == 0


KILLED = textwrap.dedent(
    """
    import sys, numpy as np
    from spacy_elmo.layers.layer_store import LayerStore
    store = LayerStore(sys.argv[1], max_bytes=1 << 30)
    i = 0
    while True:
        store.put("f" * 64, f"{i % 50:040x}", np.full((3, 2000, 64), i % 50, dtype=np.float16))
        i += 1
    """
)


def test_a_killed_writer_never_leaves_an_entry_that_reads_back_wrong(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    writer = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path)], env=env)
    deadline = time.time() + 60
    while len(_entry_files(tmp_path)) < 20 and time.time() < deadline:
        time.sleep(0.05)
    writer.kill()
    writer.wait()
    store = LayerStore(tmp_path, max_bytes=1 << 30)
    for i in range(50):
        layers = store.get("f" * 64, f"{i:040x}", 2000)
        assert layers is None or (layers == i).all()
    assert store.hits >= 20


def test_truncated_or_corrupted_entries_are_detected_and_computed_again(model_dir, tmp_path, monkeypatch):
    store = tmp_path / "store"
    nlp = _nlp(model_dir, store)
    examples = _examples(nlp, n=12)
    nlp.initialize(lambda: examples)
    sequences = _sequences(examples)
    exact = _exact_layers(model_dir, sequences)
    files = _entry_files(store)
    truncated, flipped, emptied = files[0], files[1], files[2]
    truncated.write_bytes(truncated.read_bytes()[:-100])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    emptied.write_bytes(b"")
    (truncated.parent / f".{truncated.name}.tmp-0123456789ab").write_bytes(b"partial")
    calls = _count_runs(monkeypatch)
    reader = _nlp(model_dir, store, layer_store="always")
    reader.initialize()
    got = layer_module._frozen_forward(_bilm(reader), sequences)
    assert layer_module.layer_store(_bilm(reader)).corrupt == 3
    assert sum(len(c) for c in calls) == 3
    for g, e in zip(got, exact):
        _within_float16(g, e)
    for path in (truncated, flipped, emptied):
        assert decode_entry(path.read_bytes()) is not None  # stored again, whole


def test_initialize_prefills_the_corpus_in_bilm_batches(model_dir, tmp_path, monkeypatch):
    """``initialize`` computes every training sentence in ``max_batch_tokens`` batches; the
    training updates (batches of 2) then never call the biLM."""
    store = tmp_path / "store"
    nlp = _nlp(model_dir, store, max_batch_tokens=100_000)
    examples = _examples(nlp, n=30)
    calls = _count_runs(monkeypatch)
    optimizer = nlp.initialize(lambda: examples)
    distinct = {tuple(s) for s in _sequences(examples)}
    assert len(calls) == 1 and {tuple(s) for s in calls[0]} == distinct
    fingerprint = layer_module.elmo_shim(_bilm(nlp)).fingerprint
    stored = layer_module.layer_store(_bilm(nlp))
    assert all(stored.contains(fingerprint, sequence_key(fingerprint, s)) for s in distinct)
    calls.clear()
    for start in range(0, len(examples), 2):
        nlp.update(examples[start : start + 2], sgd=optimizer)
    nlp.evaluate(examples[:5])
    assert calls == []


def test_the_store_is_off_outside_training_unless_asked(model_dir, tmp_path, monkeypatch):
    store = tmp_path / "store"
    trained = _nlp(model_dir, store)
    examples = _examples(trained, n=6)
    trained.initialize(lambda: examples)
    texts = [eg.predicted.text for eg in examples]
    calls = _count_runs(monkeypatch)
    served = _nlp(model_dir, store, ner=False)
    served.initialize()
    list(served.pipe(texts))
    assert len(calls) == 1  # layer_store = "training": a server computes
    calls.clear()
    asked = _nlp(model_dir, store, ner=False, layer_store="always")
    asked.initialize()
    docs = list(asked.pipe(texts))
    assert calls == [] and all(doc._.elmo_layers.any() for doc in docs)


def test_frozen_training_uses_the_inference_precision(model_dir, tmp_path):
    sequences = _sequences(_examples(spacy.blank("en"), n=6))
    fp32 = _exact_layers(model_dir, sequences)
    int8 = _exact_layers(model_dir, sequences, precision="int8")
    nlp = _nlp(model_dir, tmp_path / "store", layer_store="off", precision="int8")
    nlp.initialize()
    trained = layer_module._frozen_forward(_bilm(nlp), sequences, is_train=True)
    for t, i, f in zip(trained, int8, fp32):
        np.testing.assert_array_equal(t, i)
        assert np.abs(t - f).max() > 1e-4


def test_settings_are_checked(model_dir):
    nlp = spacy.blank("en")
    with pytest.raises(ElmoOptionsError, match="layer_store must be one of"):
        nlp.add_pipe("elmo", config={"model": {"weights": str(model_dir), "layer_store": "sometimes"}})
    with pytest.raises(ElmoOptionsError, match="layer_store_mb must be an integer >= 0"):
        nlp.add_pipe("elmo", config={"model": {"weights": str(model_dir), "layer_store_mb": -1}})


def test_spacy_train_fills_the_store_once_and_a_second_run_reuses_it(model_dir, synthetic_corpus, tmp_path):
    store = tmp_path / "store"

    def train(output, seed):
        command = [
            sys.executable, "-m", "spacy", "train", str(REPO / "configs" / "ner_elmo.cfg"),
            "--output", str(tmp_path / output),
            "--paths.train", str(synthetic_corpus), "--paths.dev", str(synthetic_corpus),
            "--components.elmo.model.weights", str(model_dir),
            "--components.elmo.model.layer_store_dir", str(store),
            "--training.max_steps", "6", "--training.eval_frequency", "3", "--training.seed", str(seed),
        ]  # fmt: skip
        return subprocess.run(command, check=True, capture_output=True, text=True)

    first = train("one", 0)
    distinct = {doc.text for doc in synthetic_docs(spacy.blank("en").vocab)}
    assert f"ELMo layer store: computed {len(distinct)} of {len(distinct)}" in " ".join(first.stdout.split())
    files = _entry_files(store)
    assert len(files) == len(distinct)
    mtimes = {path: path.stat().st_mtime_ns for path in files}
    second = train("two", 1)
    assert "ELMo layer store: computed" not in " ".join(second.stdout.split())
    assert _entry_files(store) == files
    assert sum(path.stat().st_mtime_ns > mtimes[path] for path in files) > 0  # read: marked used
    shutil.rmtree(store)


def test_embed_output_seeds_the_store_so_training_never_runs_the_bilm(model_dir, tmp_path, monkeypatch):
    from spacy_elmo.__main__ import main as cli_main
    from spacy_elmo.embed import EmbedInputError, EmbedSettings, embed_corpus, load_embedding_bilm
    from spacy_elmo.embed.seed_store import seed_layer_store

    nlp = _nlp(model_dir, tmp_path / "store")
    examples = _examples(nlp, n=10)
    sequences = _sequences(examples)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(s) for s in sequences) + "\n", encoding="utf-8")
    embedded = tmp_path / "corpus.hdf5"
    embed_corpus(corpus, embedded, load_embedding_bilm(str(model_dir)), EmbedSettings(), progress=False)
    other = write_tiny_model(tmp_path / "other-weights", tiny_options(), seed=1)
    with pytest.raises(EmbedInputError, match=r"corpus\.hdf5 was written by other weights"):
        seed_layer_store(embedded, str(other), store_dir=tmp_path / "store")
    assert cli_main(["embed-seed", str(embedded), "--weights", str(model_dir), "--store-dir", str(tmp_path / "store")]) == 0
    calls = _count_runs(monkeypatch)
    nlp.initialize(lambda: examples)
    got = layer_module._frozen_forward(_bilm(nlp), sequences, is_train=True)
    assert calls == []
    for g, e in zip(got, _exact_layers(model_dir, sequences)):
        _within_float16(g, e)
    top = tmp_path / "top.hdf5"
    embed_corpus(corpus, top, load_embedding_bilm(str(model_dir)), EmbedSettings(output_format="top"), progress=False)
    with pytest.raises(EmbedInputError, match=r"top\.hdf5 holds output_format='top'"):
        seed_layer_store(top, str(model_dir), store_dir=tmp_path / "store")


def test_prefill_batches_are_bounded_by_max_batch_tokens(model_dir, tmp_path, monkeypatch):
    nlp = _nlp(model_dir, tmp_path / "store", max_batch_tokens=48)
    examples = _examples(nlp, n=30)
    calls = _count_runs(monkeypatch)
    nlp.initialize(lambda: examples)
    assert len(calls) > 1
    for batch in calls:
        assert len(batch) == 1 or len(batch) * max(len(s) for s in batch) <= 48
    assert {tuple(s) for batch in calls for s in batch} == {tuple(s) for s in _sequences(examples)}
