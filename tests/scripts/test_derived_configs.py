"""scripts/derived_configs.py: the *_vectors and *_pretrain configs are their base configs plus one change."""

from pathlib import Path

import numpy as np
import spacy
from spacy.tokens import DocBin
from spacy.training import Example

REPO = Path(__file__).resolve().parents[2]


def _examples(nlp, path):
    docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
    return [Example(nlp.make_doc(doc.text), doc) for doc in docs]


def test_derived_configs_are_their_base_configs_plus_one_change():
    """The *_vectors and *_pretrain configs are written by scripts/derived_configs.py from their
    base configs, so a change to a base config reaches them (run the script after editing one)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("derived_configs", REPO / "scripts" / "derived_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.derived_configs()
    assert set(expected) == {"ner_baseline_vectors.cfg", "ner_elmo_vectors.cfg", "ner_baseline_pretrain.cfg"}
    for name, text in expected.items():
        assert (REPO / "configs" / name).read_text(encoding="utf-8") == text, name


def test_pretrain_config_computes_like_its_base_config(synthetic_corpus, tmp_path):
    """ner_baseline_pretrain.cfg moves the tok2vec into a listened-to component: started from
    ner_baseline's tok2vec (through init_tok2vec) and given its NER layers, it predicts the same."""
    from spacy.training.initialize import init_nlp

    overrides = {"paths.train": str(synthetic_corpus), "paths.dev": str(synthetic_corpus)}
    base = init_nlp(spacy.util.load_config(REPO / "configs" / "ner_baseline.cfg", overrides=overrides))
    base_tok2vec = base.get_pipe("ner").model.get_ref("tok2vec")
    (tmp_path / "tok2vec.bin").write_bytes(base_tok2vec.layers[0].to_bytes())
    overrides["paths.init_tok2vec"] = str(tmp_path / "tok2vec.bin")
    shared = init_nlp(spacy.util.load_config(REPO / "configs" / "ner_baseline_pretrain.cfg", overrides=overrides))
    shared_ner = shared.get_pipe("ner").model
    for name in ("lower", "upper"):
        shared_ner.get_ref(name).from_bytes(base.get_pipe("ner").model.get_ref(name).to_bytes())
    shared_ner.get_ref("tok2vec").layers[-1].from_bytes(base_tok2vec.layers[-1].to_bytes())
    texts = [eg.reference.text for eg in _examples(base, synthetic_corpus)[:10]]
    for a, b in zip(base.pipe(texts), shared.pipe(texts)):
        assert [(e.start, e.end, e.label_) for e in a.ents] == [(e.start, e.end, e.label_) for e in b.ents]
        np.testing.assert_allclose(base_tok2vec.predict([a]), shared_ner.get_ref("tok2vec").predict([b]), rtol=1e-6)
