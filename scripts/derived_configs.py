"""Write the configs that are a shipped config plus one change, so they never drift from it.

- ``configs/ner_baseline_vectors.cfg``, ``configs/ner_elmo_vectors.cfg``: the base config with
  floret static vectors turned on (``include_static_vectors``) and
  ``spacy-elmo.require_vectors.v1`` in ``[initialize.before_init]`` (chaining the base's own
  ``before_init`` callback).
- ``configs/ner_baseline_pretrain.cfg``: ``ner_baseline.cfg`` with its tok2vec as a ``tok2vec``
  component that the NER model listens to (the same computation; ``spacy pretrain`` and
  ``[initialize] init_tok2vec`` reach a tok2vec only through a component), spaCy's default
  ``[pretraining]`` block aimed at it, and ``spacy-elmo.require_init_tok2vec.v1``.

tests/pipeline/test_training.py checks that the committed files are what this script writes.

    python scripts/derived_configs.py
"""

from pathlib import Path

from spacy.language import DEFAULT_CONFIG_PRETRAIN_PATH
from thinc.api import Config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VECTORS_BASES = ("ner_baseline", "ner_elmo")
PRETRAIN_BASES = ("ner_baseline",)
REQUIRE_VECTORS = '@callbacks = "spacy-elmo.require_vectors.v1"\n'


def _body(base_text: str) -> str:
    """The config without its first comment line (each derived config writes its own)."""
    lines = base_text.split("\n", 1)
    return lines[1] if lines[0].startswith("#") else base_text


def vectors_config(base_text: str, base_name: str) -> str:
    """``base_text`` (the config ``base_name``.cfg) with static vectors required and turned on."""
    body = _body(base_text)
    header = (
        f"# NEEDS STATIC VECTORS: {base_name}.cfg plus floret static vectors in MultiHashEmbed (include_static_vectors).\n"
        f"# Pass a spaCy vectors directory with --paths.vectors (spacy init vectors LANG FILE DIR --mode floret;\n"
        f"# the project's vectors step makes one from the Wikipedia text the default biLM saw).\n"
    )
    if body.count("include_static_vectors = false") != 1:
        raise ValueError(f"{base_name}.cfg: expected one 'include_static_vectors = false'")
    body = body.replace("include_static_vectors = false", "include_static_vectors = true")
    if "\nbefore_init = null\n" in body:
        body = body.replace("\nbefore_init = null\n", "\n", 1)
        body = body.replace(
            "[initialize.components]\n", f"[initialize.components]\n\n[initialize.before_init]\n{REQUIRE_VECTORS}", 1
        )
    else:
        marker = "[initialize.before_init]\n"
        start = body.index(marker) + len(marker)
        end = body.index("\n", start) + 1
        chained = body[start:end]
        body = body[:start] + REQUIRE_VECTORS + "\n[initialize.before_init.also]\n" + chained + body[end:]
    return header + body


def pretrain_config(base_text: str, base_name: str) -> str:
    """``base_text`` with its NER tok2vec as a listened-to component, ready for ``spacy pretrain``."""
    config = Config().from_str(_body(base_text), interpolate=False)
    if config["initialize"]["before_init"] is not None:
        raise ValueError(f"{base_name}.cfg: expected [initialize] before_init = null")
    tok2vec = config["components"]["ner"]["model"]["tok2vec"]
    config["components"]["tok2vec"] = {"factory": "tok2vec", "model": tok2vec}
    config["components"]["ner"]["model"]["tok2vec"] = {
        "@architectures": "spacy.Tok2VecListener.v1",
        "width": tok2vec["encode"]["width"],
        "upstream": "tok2vec",
    }
    config["nlp"]["pipeline"] = ["tok2vec", *config["nlp"]["pipeline"]]
    config["initialize"]["before_init"] = {"@callbacks": "spacy-elmo.require_init_tok2vec.v1"}
    defaults = Config().from_disk(DEFAULT_CONFIG_PRETRAIN_PATH, interpolate=False)
    config["paths"]["raw_text"] = None
    config["pretraining"] = {**defaults["pretraining"], "component": "tok2vec", "layer": ""}
    config["corpora"]["pretrain"] = defaults["corpora"]["pretrain"]
    header = (
        f"# NEEDS SPACY PRETRAIN WEIGHTS: {base_name}.cfg with its tok2vec as a 'tok2vec' component that the NER\n"
        f"# model listens to (the same computation), started from 'spacy pretrain' weights. Pass them with\n"
        f"# --paths.init_tok2vec FILE (the project's tok2vec-pretrain step makes them with this config's [pretraining]).\n\n"
    )
    return header + config.to_str()


def derived_configs() -> dict:
    """File name -> text of every derived config, from the committed base configs."""
    texts = {}
    for base in VECTORS_BASES:
        texts[f"{base}_vectors.cfg"] = vectors_config((CONFIGS / f"{base}.cfg").read_text(encoding="utf-8"), base)
    for base in PRETRAIN_BASES:
        texts[f"{base}_pretrain.cfg"] = pretrain_config((CONFIGS / f"{base}.cfg").read_text(encoding="utf-8"), base)
    return texts


def main() -> None:
    for name, text in derived_configs().items():
        (CONFIGS / name).write_text(text, encoding="utf-8")
        print(f"configs/{name}")


if __name__ == "__main__":
    main()
