"""The frozen biLM's layer cache fills in a process that trains; a process that only annotates just reads it."""

import numpy as np
import spacy

TEXTS = ["She sat on the river bank .", "John went to Paris on Monday .", "The old market closed early ."]


def _frozen_elmo(model_dir, layer_cache_mb=64):
    """The in-memory cache alone: the on-disk store (tests/layers/test_layer_store.py) is off."""
    nlp = spacy.blank("en")
    model = {"weights": str(model_dir), "layer_cache_mb": layer_cache_mb, "layer_store": "off"}
    nlp.add_pipe("elmo", config={"model": model})
    nlp.initialize()
    elmo = nlp.get_pipe("elmo")
    return nlp, elmo, elmo.model.layers[0]


def _cache(bilm_layer):
    from spacy_elmo.layers.bilm_layer import layer_cache

    return layer_cache(bilm_layer)


def test_inference_never_fills_the_layer_cache(model_dir):
    nlp, elmo, bilm_layer = _frozen_elmo(model_dir)
    for _ in range(3):
        docs = list(nlp.pipe(TEXTS))
    elmo.model.predict([nlp.make_doc(text) for text in TEXTS])
    assert len(_cache(bilm_layer)) == 0 and _cache(bilm_layer).n_bytes == 0
    assert all(doc._.elmo_layers.any() for doc in docs)


def test_training_updates_fill_it_and_inference_reads_it(model_dir):
    nlp, elmo, bilm_layer = _frozen_elmo(model_dir)
    docs = [nlp.make_doc(text) for text in TEXTS]
    expected = elmo.model.predict(docs)
    trained, _ = elmo.model.begin_update(docs)
    cache = _cache(bilm_layer)
    assert len(cache) == len(TEXTS)
    hits = cache.hits
    again = elmo.model.predict(docs)
    assert cache.hits == hits + len(TEXTS) and len(cache) == len(TEXTS)
    for a, b, c in zip(expected, trained, again):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)
        np.testing.assert_array_equal(b, c)


def test_after_training_inference_caches_too_so_evaluations_skip_the_bilm(model_dir, monkeypatch):
    from spacy_elmo.layers import bilm_layer as module

    nlp, elmo, bilm_layer = _frozen_elmo(model_dir)
    elmo.model.begin_update([nlp.make_doc(text) for text in TEXTS])
    dev = [nlp.make_doc("A new sentence nobody trained on ."), nlp.make_doc("Another one .")]
    first = elmo.model.predict(dev)
    assert len(_cache(bilm_layer)) == len(TEXTS) + len(dev)
    calls = []
    real_run = module._run
    monkeypatch.setattr(module, "_run", lambda *args: calls.append(args) or real_run(*args))
    again = elmo.model.predict(dev)
    assert calls == []
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    _cache(bilm_layer).clear()
    elmo.model.predict(dev)
    assert len(_cache(bilm_layer)) == 0, "a cleared cache forgets that this process trained"


def test_a_fine_tuned_bilm_never_caches(model_dir):
    nlp, elmo, bilm_layer = _frozen_elmo(model_dir)
    bilm_layer.attrs["frozen"] = False
    docs = [nlp.make_doc(text) for text in TEXTS]
    elmo.model.begin_update(docs)
    elmo.model.predict(docs)
    assert len(_cache(bilm_layer)) == 0


def test_copies_start_with_an_empty_layer_cache(model_dir):
    import copy
    import pickle

    from spacy_elmo.layers.bilm_layer import elmo_shim

    nlp, elmo, bilm_layer = _frozen_elmo(model_dir)
    elmo.model.begin_update([nlp.make_doc(text) for text in TEXTS])
    assert len(_cache(bilm_layer)) > 0
    shim = elmo_shim(bilm_layer)
    for twin in (pickle.loads(pickle.dumps(shim)), copy.deepcopy(shim)):
        assert twin.layer_cache is None
    assert len(_cache(bilm_layer)) > 0


def test_loading_other_weights_empties_the_layer_cache(model_dir):
    nlp, elmo, bilm_layer = _frozen_elmo(model_dir)
    elmo.model.begin_update([nlp.make_doc(text) for text in TEXTS])
    assert len(_cache(bilm_layer)) > 0
    elmo.from_bytes(elmo.to_bytes())
    assert len(_cache(bilm_layer)) == 0


def test_the_cache_evicts_least_recently_used_entries_within_its_byte_bound():
    from spacy_elmo.layers.layer_cache import LayerCache

    entry = np.zeros((3, 4, 8), dtype=np.float32)  # 384 bytes
    cache = LayerCache(max_bytes=3 * entry.nbytes)
    for key in "abc":
        cache.put(key, entry + ord(key))
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put("d", entry)
    assert len(cache) == 3 and cache.n_bytes == 3 * entry.nbytes
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("d") is not None
    cache.put("huge", np.zeros((3, 100, 8), dtype=np.float32))  # larger than the bound: not kept
    assert cache.get("huge") is None and cache.n_bytes <= cache.max_bytes


def test_threads_share_a_cache_filled_in_training(model_dir):
    """After training filled the cache, four threads calling the pipeline read it (hits rise)
    and get exactly the vectors the single-threaded reads gave."""
    from conftest import run_threads

    nlp = spacy.blank("en")
    nlp.add_pipe("elmo", config={"model": {"weights": str(model_dir), "layer_cache_mb": 64, "layer_store": "off"}})
    texts = [f"text number {i} about the bank" for i in range(12)]
    layer = nlp.get_pipe("elmo").model.get_ref("bilm")
    from spacy_elmo.layers.bilm_layer import layer_cache

    layer.begin_update([[token.text for token in nlp.make_doc(t)] for t in texts])  # a training forward fills the cache
    cache = layer_cache(layer)
    assert cache.filled_in_training and len(cache) == len(texts)
    expected = {t: nlp(t)._.elmo_layers for t in texts}
    hits = cache.hits
    results = []

    def work(k: int) -> None:
        results.extend((t, nlp(t)._.elmo_layers) for t in texts[k::2] + texts[::-1])

    run_threads(4, work)
    assert len(results) == sum(len(texts[k::2]) + len(texts) for k in range(4))
    assert cache.hits - hits >= len(results)
    for text, layers in results:
        np.testing.assert_array_equal(layers, expected[text])
