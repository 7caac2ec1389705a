"""Training downstream components on ELMo: listeners, per-task mixes, frozen vs fine-tuned biLM."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import Example
from thinc.api import fix_random_seed

from spacy_elmo.layers.scalar_mix import mix_coefficients

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def conll_slice(shared, tmp_path_factory) -> Path:
    """The first ~40 sentences of CoNLL-2003 train, converted with ``spacy convert``."""
    folder = tmp_path_factory.mktemp("conll")
    lines = (shared / "data" / "conll2003" / "train.txt").read_text(encoding="utf-8").split("\n")[:600]
    (folder / "train.iob").write_text("\n".join(lines) + "\n", encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "spacy", "convert", str(folder / "train.iob"), str(folder), "--converter", "conll", "-n", "1"],
        check=True,
        capture_output=True,
    )
    return folder / "train.spacy"


def _nlp_from_config(name, model_dir, **overrides):
    config = spacy.util.load_config(REPO / "configs" / name)
    overrides = {
        "components.elmo.model.weights": str(model_dir / "weights.hdf5"),
        "components.elmo.model.options": str(model_dir / "options.json"),
        **overrides,
    }
    config = config.merge(spacy.util.dot_to_dict(overrides))
    return spacy.util.load_model_from_config(config, auto_fill=True, validate=True)


def _train(nlp, examples, steps=12, seed=0):
    fix_random_seed(seed)
    optimizer = nlp.initialize(lambda: examples)
    losses = []
    for _ in range(steps):
        batch_losses = {}
        for start in range(0, len(examples), 8):
            nlp.update(examples[start : start + 8], sgd=optimizer, losses=batch_losses, drop=0.1)
        losses.append(batch_losses["ner"])
    return losses


def _examples(nlp, path):
    docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
    return [Example(nlp.make_doc(doc.text), doc) for doc in docs]


def _bilm_arrays(nlp):
    return nlp.get_pipe("elmo").model.layers[0].shims[0].bilm.to_arrays()


def _mix(nlp, component="ner"):
    node = next(n for n in nlp.get_pipe(component).model.walk() if n.name == "elmo-scalar-mix")
    return node


@pytest.mark.parametrize("corpus_name", ["synthetic_corpus", "conll_slice"])
def test_frozen_training_learns_mix_and_keeps_bilm(model_dir, corpus_name, request, tmp_path):
    nlp = _nlp_from_config("ner_elmo.cfg", model_dir)
    examples = _examples(nlp, request.getfixturevalue(corpus_name))
    before = None
    fix_random_seed(0)
    optimizer = nlp.initialize(lambda: examples)
    before = _bilm_arrays(nlp)
    losses = []
    for _ in range(12):
        step_losses = {}
        for start in range(0, len(examples), 8):
            nlp.update(examples[start : start + 8], sgd=optimizer, losses=step_losses, drop=0.1)
        losses.append(step_losses["ner"])
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:2])
    weights = mix_coefficients(_mix(nlp))
    assert np.abs(weights - 1 / 3).max() > 1e-3
    after = _bilm_arrays(nlp)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)

    texts = [eg.reference.text for eg in examples[:5]]
    predicted = [[(e.text, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]
    nlp.to_disk(tmp_path / "trained")
    reloaded = spacy.load(tmp_path / "trained")
    assert [[(e.text, e.label_) for e in doc.ents] for doc in reloaded.pipe(texts)] == predicted
    np.testing.assert_array_equal(mix_coefficients(_mix(reloaded)), weights)

    reloaded.replace_listeners("elmo", "ner", ["model.tok2vec.elmo"])
    reloaded.remove_pipe("elmo")
    assert [[(e.text, e.label_) for e in doc.ents] for doc in reloaded.pipe(texts)] == predicted
    reloaded.to_disk(tmp_path / "standalone")
    standalone = spacy.load(tmp_path / "standalone")
    assert standalone.pipe_names == ["ner"]
    assert [[(e.text, e.label_) for e in doc.ents] for doc in standalone.pipe(texts)] == predicted


def test_fine_tuning_changes_the_bilm(model_dir, synthetic_corpus):
    nlp = _nlp_from_config("ner_elmo.cfg", model_dir, **{"components.elmo.frozen": False})
    examples = _examples(nlp, synthetic_corpus)[:16]
    fix_random_seed(0)
    optimizer = nlp.initialize(lambda: examples)
    before = _bilm_arrays(nlp)
    nlp.update(examples, sgd=optimizer)
    nlp.update(examples, sgd=optimizer)
    after = _bilm_arrays(nlp)
    changed = [name for name in before if not np.array_equal(before[name], after[name])]
    assert "CNN_proj/W_proj" in changed and any(name.startswith("RNN_1") for name in changed)


@pytest.mark.parametrize("frozen", [True, False])
def test_elmo_loss_is_the_gradient_sent_into_the_bilm(model_dir, synthetic_corpus, frozen):
    """spaCy's LOSS ELMO column: the squared norm of the listeners' gradient, which only a
    fine-tuned biLM receives; frozen, there is nothing to report."""
    nlp = _nlp_from_config("ner_elmo.cfg", model_dir, **{"components.elmo.frozen": frozen})
    examples = _examples(nlp, synthetic_corpus)[:16]
    fix_random_seed(0)
    optimizer = nlp.initialize(lambda: examples)
    nlp.update(examples, sgd=optimizer)  # NER's output layer starts at zero: no gradient reaches its input yet
    losses = {}
    nlp.update(examples, sgd=optimizer, losses=losses)
    assert losses["ner"] > 0
    if frozen:
        assert losses["elmo"] == 0.0
    else:
        assert losses["elmo"] > 1e-3


def test_layer_cache_gives_the_same_training(model_dir, synthetic_corpus):
    results = []
    for cache_mb in (0, 64):
        nlp = _nlp_from_config("ner_elmo.cfg", model_dir, **{"components.elmo.model.layer_cache_mb": cache_mb})
        examples = _examples(nlp, synthetic_corpus)[:24]
        results.append((_train(nlp, examples, steps=4), mix_coefficients(_mix(nlp))))
        bilm_layer = nlp.get_pipe("elmo").model.layers[0]
        cache = getattr(bilm_layer.shims[0], "layer_cache", None)
        if cache_mb:
            distinct = {tuple(token.text for token in eg.predicted) for eg in examples}
            assert cache.hits > 0 and len(cache) == len(distinct)
    # A cached sentence reuses the layers computed in its first batch; recomputed in another
    # batch composition (duplicates are hits) they differ by float rounding only.
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5)


def test_two_listeners_keep_their_own_mix(model_dir, synthetic_corpus):
    nlp = _nlp_from_config("ner_elmo.cfg", model_dir)
    textcat_model = {
        "@architectures": "spacy.TextCatReduce.v1",
        "exclusive_classes": True,
        "use_reduce_first": False,
        "use_reduce_last": False,
        "use_reduce_max": False,
        "use_reduce_mean": True,
        "nO": None,
        "tok2vec": {"@architectures": "spacy-elmo.ElmoListener.v1", "upstream": "elmo"},
    }
    textcat = nlp.add_pipe("textcat", config={"model": textcat_model})
    textcat.add_label("LONG")
    textcat.add_label("SHORT")
    examples = _examples(nlp, synthetic_corpus)[:24]
    for eg in examples:
        long = len(eg.reference) > 10
        eg.reference.cats = {"LONG": float(long), "SHORT": float(not long)}
    assert sorted(nlp.get_pipe("elmo").listening_components) == ["ner", "textcat"]
    fix_random_seed(0)
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(6):
        nlp.update(examples, sgd=optimizer)
    ner_mix, textcat_mix = mix_coefficients(_mix(nlp, "ner")), mix_coefficients(_mix(nlp, "textcat"))
    assert np.abs(ner_mix - textcat_mix).max() > 1e-4
    for mix in (ner_mix, textcat_mix):
        assert np.abs(mix - 1 / 3).max() > 1e-4


def test_tok2vec_without_spacy_embeddings_reads_elmo_only(model_dir, synthetic_corpus):
    """``embed = null`` leaves MultiHashEmbed out: the projection sees the ELMo mix alone."""
    nlp = _nlp_from_config("ner_elmo.cfg", model_dir, **{"components.ner.model.tok2vec.embed": None})
    tok2vec = nlp.get_pipe("ner").model.get_ref("tok2vec")
    assert not [node.name for node in tok2vec.walk() if "hashembed" in node.name]
    examples = _examples(nlp, synthetic_corpus)
    losses = _train(nlp, examples, steps=8)
    assert losses[-1] < 0.5 * losses[0]
    projection = next(node for node in tok2vec.walk() if node.name == "maxout")
    assert projection.get_dim("nI") == nlp.get_pipe("elmo").model.get_dim("nO")


@pytest.mark.slow
def test_spacy_train_evaluate_and_package_cli(model_dir, synthetic_corpus, tmp_path):
    """The documented command lines: ``spacy train`` with the biLM chosen by override, then
    ``spacy evaluate`` and ``spacy package`` (which must declare spacy-elmo)."""
    train = [
        sys.executable,
        "-m",
        "spacy",
        "train",
        str(REPO / "configs" / "ner_elmo.cfg"),
        "--output",
        str(tmp_path / "out"),
        "--paths.train",
        str(synthetic_corpus),
        "--paths.dev",
        str(synthetic_corpus),
        "--components.elmo.model.weights",
        str(model_dir / "weights.hdf5"),
        "--components.elmo.model.options",
        str(model_dir / "options.json"),
        "--training.max_steps",
        "6",
        "--training.eval_frequency",
        "3",
    ]
    subprocess.run(train, check=True, capture_output=True)
    best = tmp_path / "out" / "model-best"
    evaluate = [
        sys.executable,
        "-m",
        "spacy",
        "evaluate",
        str(best),
        str(synthetic_corpus),
        "--output",
        str(tmp_path / "metrics.json"),
    ]
    subprocess.run(evaluate, check=True, capture_output=True)
    import json

    assert "ents_f" in json.loads((tmp_path / "metrics.json").read_text())
    (tmp_path / "pkg").mkdir()
    package = [
        sys.executable,
        "-m",
        "spacy",
        "package",
        str(best),
        str(tmp_path / "pkg"),
        "--name",
        "elmo_ner",
        "--version",
        "0.0.1",
        "--build",
        "none",
    ]
    subprocess.run(package, check=True, capture_output=True)
    meta = json.loads(next((tmp_path / "pkg").rglob("meta.json")).read_text())
    assert any(req.startswith("spacy-elmo") for req in meta["requirements"])


def test_frozen_upstream_in_annotating_components(model_dir, synthetic_corpus):
    """spaCy's other way to freeze an embedder: listeners then read ``doc._.elmo_layers``."""
    nlp = _nlp_from_config("ner_elmo.cfg", model_dir)
    examples = _examples(nlp, synthetic_corpus)[:16]
    fix_random_seed(0)
    optimizer = nlp.initialize(lambda: examples)
    losses = {}
    for _ in range(3):
        nlp.update(examples, sgd=optimizer, losses=losses, exclude=["elmo"], annotates=["elmo"])
    assert losses["ner"] > 0 and "elmo" not in losses
    with pytest.raises(ValueError, match="annotating"):
        nlp.update(_examples(nlp, synthetic_corpus)[:4], sgd=optimizer, exclude=["elmo"])


CONFIGS = [
    "ner_elmo.cfg",
    "ner_baseline.cfg",
    "ner_elmo_vectors.cfg",
    "ner_baseline_vectors.cfg",
    "textcat_elmo.cfg",
    "textcat_baseline.cfg",
]

DEBUG_CONFIGS = """
import sys
from spacy.cli.debug_config import debug_config
for path in sys.argv[1:]:
    print("@@config " + path, flush=True)
    try:
        debug_config(path, overrides={"paths.train": "x", "paths.dev": "y"})
    except SystemExit as exit:
        print("exit", exit.code, flush=True)
"""


@pytest.fixture(scope="module")
def debug_config_output():
    """What ``spacy debug config`` prints for each shipped config, all checked in one fresh process
    (so the architectures come from the entry points, as in ``python -m spacy debug config``)."""
    paths = [str(REPO / "configs" / name) for name in CONFIGS]
    done = subprocess.run([sys.executable, "-c", DEBUG_CONFIGS, *paths], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    sections = done.stdout.split("@@config ")[1:]
    return {Path(section.split("\n", 1)[0]).name: section for section in sections}


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_pass_spacy_debug_config(name, debug_config_output):
    output = debug_config_output[name]
    assert "Config is valid" in output and "exit" not in output, output


@pytest.mark.parametrize("name", ["ner_baseline_vectors.cfg", "ner_elmo_vectors.cfg"])
def test_vectors_configs_train_with_vectors_and_name_the_setting_without(name, model_dir, synthetic_corpus, floret_vectors):
    from spacy.training.initialize import init_nlp

    from spacy_elmo.errors import ElmoConfigError

    config = spacy.util.load_config(REPO / "configs" / name)
    overrides = {"paths.train": str(synthetic_corpus), "paths.dev": str(synthetic_corpus), "training.max_steps": 2}
    if "elmo" in name:
        overrides["components.elmo.model.weights"] = str(model_dir)
    with pytest.raises(ElmoConfigError, match=r"\[paths\] vectors is not set: pass --paths.vectors DIR"):
        init_nlp(config.merge(spacy.util.dot_to_dict(overrides)))
    overrides["paths.vectors"] = str(floret_vectors)
    nlp = init_nlp(config.merge(spacy.util.dot_to_dict(overrides)))
    assert nlp.vocab.vectors.mode == "floret" and nlp.vocab.vectors.shape == (50, 8)
    examples = _examples(nlp, synthetic_corpus)
    losses = {}
    nlp.update(examples[:8], losses=losses)
    assert losses["ner"] > 0


def test_replaced_listeners_keep_every_mix_setting_in_the_saved_config(model_dir, synthetic_corpus, tmp_path):
    """A pipeline trained with non-default listener settings, then replace_listeners-ed, saved
    and loaded, states them in config.cfg and computes the same; a model built from that
    config alone has them (layer_norm used to be dropped from the config while the stored
    layer kept it, so the config described another model)."""
    from spacy_elmo.pipeline.architectures import MIX_SETTINGS

    settings = {"l2_penalty": 0.01, "dropout": 0.2, "layer_norm": True}
    assert set(settings) == set(MIX_SETTINGS)
    overrides = {f"components.ner.model.tok2vec.elmo.{key}": value for key, value in settings.items()}
    nlp = _nlp_from_config("ner_elmo.cfg", model_dir, **overrides)
    examples = _examples(nlp, synthetic_corpus)
    _train(nlp, examples, steps=2)
    docs = [eg.reference.text for eg in examples[:5]]

    def tok2vec_outputs(pipeline):
        return pipeline.get_pipe("ner").model.get_ref("tok2vec").predict([pipeline.make_doc(text) for text in docs])

    nlp.replace_listeners("elmo", "ner", ["model.tok2vec.elmo"])
    nlp.remove_pipe("elmo")
    expected = tok2vec_outputs(nlp)
    nlp.to_disk(tmp_path / "standalone")
    saved = spacy.util.load_config(tmp_path / "standalone" / "config.cfg")
    mix = saved["components"]["ner"]["model"]["tok2vec"]["elmo"]
    assert mix["@architectures"] == "spacy-elmo.ElmoMix.v1"
    assert {key: mix[key] for key in settings} == settings
    from_config = spacy.util.load_model_from_config(saved, auto_fill=True)
    node = next(n for n in from_config.get_pipe("ner").model.walk() if n.name == "elmo-scalar-mix")
    assert {"l2_penalty": node.attrs["l2_penalty"], "layer_norm": node.attrs["layer_norm"]} == {
        "l2_penalty": 0.01,
        "layer_norm": True,
    }
    loaded = spacy.load(tmp_path / "standalone")
    for got, want in zip(tok2vec_outputs(loaded), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
