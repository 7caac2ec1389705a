"""``python -m spacy_elmo init-config IN OUT``: turn a spaCy training config into one on ELMo.

Takes a config made by ``python -m spacy init config`` (or any spaCy training config) and
rewrites only what ELMo needs, the way the shipped ``ner_elmo`` config is built
(``python -m spacy_elmo config ner_elmo ner_elmo.cfg`` writes it out):

* an ``elmo`` component first in the pipeline (biLM ``--weights``, frozen unless
  ``--fine-tune``);
* every component's token-to-vector layer (a listener of the shared ``tok2vec`` component,
  or its own ``spacy.Tok2Vec`` / ``spacy.HashEmbedCNN`` layer) becomes
  ``spacy-elmo.ElmoTok2Vec.v1``: the task's own mix of the biLM layers (an
  ``ElmoListener.v1`` of ``elmo``) concatenated with the same ``MultiHashEmbed`` embeddings and
  followed by the same encoder that the replaced layer had;
* the shared ``tok2vec`` component goes, since nothing listens to it any more;
* a bag-of-words ``textcat`` has no token vectors to replace, so it becomes spaCy's
  ``TextCatEnsemble.v2`` of that same bag-of-words model and an ELMo one (the layout of
  ``spacy init config --optimize accuracy``);
* ``[system] gpu_allocator`` is set to ``"pytorch"`` when unset, so that on a GPU Thinc and
  the PyTorch biLM share one memory pool.

Everything else (corpora, training schedule, scores, the components' own settings) is kept.
"""

import argparse
import copy
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from spacy.util import is_package, registry
from thinc.api import Config

from .bilm import manylangs_models
from .bilm.pretrained import PUBLISHED_MODELS
from .errors import ElmoConfigError
from .files import write_text_atomic

ELMO_COMPONENT = "elmo"
TOK2VEC_LISTENERS = ("spacy.Tok2VecListener.v1",)
TOK2VEC_LAYERS = ("spacy.Tok2Vec.v1", "spacy.Tok2Vec.v2")
HASH_EMBED_CNN = ("spacy.HashEmbedCNN.v1", "spacy.HashEmbedCNN.v2")
ELMO_TOK2VEC = "spacy-elmo.ElmoTok2Vec.v1"
BAG_OF_WORDS_TEXTCAT = ("spacy.TextCatBOW.v1", "spacy.TextCatBOW.v2", "spacy.TextCatBOW.v3")

LISTENER = {
    "@architectures": "spacy-elmo.ElmoListener.v1",
    "upstream": ELMO_COMPONENT,
    "grad_factor": 1.0,
    "l2_penalty": 0.001,
    "dropout": 0.1,
}
# The embeddings and encoder of spaCy's default tok2vec, for a component that had none.
DEFAULT_WIDTH = 96
DEFAULT_EMBED = {
    "@architectures": "spacy.MultiHashEmbed.v2",
    "width": DEFAULT_WIDTH,
    "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
    "rows": [5000, 1000, 2500, 2500],
    "include_static_vectors": False,
}
DEFAULT_ENCODE = {
    "@architectures": "spacy.MaxoutWindowEncoder.v2",
    "width": DEFAULT_WIDTH,
    "depth": 4,
    "window_size": 1,
    "maxout_pieces": 3,
}


ATOMIC_SAVES = "spacy-elmo.atomic_saves.v1"
"""The callback that makes spacy train's saves atomic (see :mod:`spacy_elmo.pipeline.callbacks`)."""


def elmo_config(
    config: Config,
    *,
    weights: str = "default",
    frozen: bool = True,
    vectors: Optional[str] = None,
    source: str = "the config",
) -> Tuple[Config, List[str]]:
    """``config`` rewritten to train on ELMo, and notes on what was changed beyond the tok2vec layers.

    ``config`` is the uninterpolated config (``${...}`` references kept); ``source`` names
    it in error messages. ``vectors`` (a spaCy vectors directory or package) turns static
    vectors on in every ELMo tok2vec's embeddings, as in ``ner_elmo_vectors.cfg``. Raises :class:`ElmoConfigError` for a config that is not a spaCy
    training config, already uses ELMo, or has a layer this command cannot replace.
    """
    _check_training_config(config, source)
    _check_no_elmo(config, source)
    config = config.copy()
    try:
        resolved = config.interpolate()
    except Exception as err:  # thinc raises several types for a reference it cannot resolve
        raise ElmoConfigError(f"{source}: a ${{...}} reference cannot be resolved ({' '.join(str(err).split())}).") from None
    pipeline: List[str] = list(config["nlp"]["pipeline"])
    components: Dict[str, Any] = config["components"]
    tok2vecs = [name for name in pipeline if components.get(name, {}).get("factory") == "tok2vec"]
    sourced = [name for name in pipeline if "source" in components.get(name, {})]
    if sourced and tok2vecs:
        raise ElmoConfigError(
            f"{source}: [components.{sourced[0]}] is sourced from a trained pipeline, so it may listen to "
            f"the '{tok2vecs[0]}' component that init-config would remove. Source it after init-config, "
            f"or edit the config by hand."
        )
    notes: List[str] = []
    replaced = 0
    for name in pipeline:
        block = components.get(name)
        if name in tok2vecs or not isinstance(block, dict) or "source" in block or "model" not in block:
            continue
        replaced += _replace_tok2vecs(block, resolved["components"][name], ["components", name], resolved, tok2vecs, source)
        model = block["model"]
        if model.get("@architectures") in BAG_OF_WORDS_TEXTCAT:
            if tok2vecs:
                tok2vec = _from_tok2vec_layer(
                    resolved["components"][tok2vecs[0]]["model"], None, [f"components.{tok2vecs[0]}.model"], source
                )
            else:
                tok2vec = _elmo_tok2vec(DEFAULT_WIDTH, DEFAULT_EMBED, DEFAULT_ENCODE)
            block["model"] = {
                "@architectures": "spacy.TextCatEnsemble.v2",
                "nO": model.get("nO"),
                "tok2vec": tok2vec,
                "linear_model": model,
            }
            replaced += 1
            notes.append(
                f"[components.{name}.model] was a bag-of-words classifier without token vectors: it is now "
                f"spacy.TextCatEnsemble.v2 of that same model and one on ELMo."
            )
    if not replaced:
        raise ElmoConfigError(
            f"{source}: no component has a token-to-vector layer to replace (a spacy.Tok2VecListener.v1, "
            f"spacy.Tok2Vec or spacy.HashEmbedCNN layer at a 'tok2vec' key), so nothing would read ELMo. "
            f"Start from 'python -m spacy init config CONFIG --pipeline ner' (or textcat, tagger, ...)."
        )
    for name in tok2vecs:
        _remove_component(config, name, source)
    config["nlp"]["pipeline"] = [ELMO_COMPONENT] + list(config["nlp"]["pipeline"])
    components[ELMO_COMPONENT] = _elmo_component(weights, frozen)
    training = config.setdefault("training", {})
    if training.get("before_to_disk") is None:
        training["before_to_disk"] = {"@callbacks": ATOMIC_SAVES}
        notes.append(
            f'[training.before_to_disk] @callbacks = "{ATOMIC_SAVES}": model-last and model-best are swapped in '
            f"whole, so a killed spacy train never loses them."
        )
    else:
        notes.append(
            f"[training.before_to_disk] already holds a callback, so {ATOMIC_SAVES} (saves that survive kill -9) "
            f"was not added; call it from yours if you want it."
        )
    if vectors is not None:
        notes.append(_use_static_vectors(config, vectors, source))
    system = config.setdefault("system", {})
    if system.get("gpu_allocator") is None:
        system["gpu_allocator"] = "pytorch"
        if config.get("training", {}).get("gpu_allocator") is None:
            config["training"]["gpu_allocator"] = "${system.gpu_allocator}"
        notes.append('[system] gpu_allocator = "pytorch": on a GPU, Thinc and the PyTorch biLM then share one memory pool.')
    return Config(config), notes


def _use_static_vectors(config: Dict[str, Any], vectors: str, source: str) -> str:
    """Turn static vectors on in every ELMo tok2vec's embeddings and point ``[paths] vectors`` at ``vectors``."""
    embeds = []
    for path, value in _walk(config["components"], ("components",)):
        if path[-1] == "@architectures" and value == ELMO_TOK2VEC:
            block = config
            for key in path[:-1]:
                block = block[key]
            embeds.append((path[:-1], block["embed"]))
    for path, embed in embeds:
        if "include_static_vectors" not in embed:
            raise ElmoConfigError(
                f"{source}: [{'.'.join(path)}.embed] is {embed.get('@architectures')}, which has no "
                f"include_static_vectors setting, so --vectors cannot turn static vectors on there. Use "
                f"spacy.MultiHashEmbed.v2 embeddings, or leave out --vectors."
            )
        embed["include_static_vectors"] = True
    config.setdefault("paths", {})["vectors"] = vectors
    initialize = config.setdefault("initialize", {})
    if initialize.get("vectors") is None:
        initialize["vectors"] = "${paths.vectors}"
    return (
        f"[paths] vectors = {vectors!r}, and include_static_vectors = true in the embeddings of {len(embeds)} "
        f"ELMo tok2vec layer(s): ELMo plus static vectors, the paper's setup (ner_elmo_vectors.cfg)."
    )


def _check_training_config(config: Config, source: str) -> None:
    missing = [section for section in ("nlp", "components", "training") if not isinstance(config.get(section), dict)]
    if missing or not isinstance(config["nlp"].get("pipeline"), list):
        what = f"has no [{missing[0]}] section" if missing else "has no [nlp] pipeline list"
        raise ElmoConfigError(
            f"{source} is not a spaCy training config: it {what}. Create one with "
            f"'python -m spacy init config CONFIG --pipeline ner' and pass that."
        )


def _check_no_elmo(config: Config, source: str) -> None:
    for name, block in config["components"].items():
        if name == ELMO_COMPONENT or (isinstance(block, dict) and block.get("factory") == "elmo"):
            raise ElmoConfigError(
                f"{source} already has an ELMo component ([components.{name}]): edit it directly, or run "
                f"init-config on the config that 'python -m spacy init config' made."
            )
    for path, value in _walk(config):
        if isinstance(value, str) and value.startswith("spacy-elmo."):
            raise ElmoConfigError(
                f'{source} already uses ELMo ([{".".join(path[:-1])}] {path[-1]} = "{value}"): edit it '
                f"directly, or run init-config on the config that 'python -m spacy init config' made."
            )


def _walk(block: Dict[str, Any], path: Tuple[str, ...] = ()) -> Iterator[Tuple[Tuple[str, ...], Any]]:
    for key, value in block.items():
        if isinstance(value, dict):
            yield from _walk(value, path + (key,))
        else:
            yield path + (key,), value


def _replace_tok2vecs(
    block: Dict[str, Any],
    resolved: Dict[str, Any],
    path: List[str],
    resolved_config: Dict[str, Any],
    tok2vecs: List[str],
    source: str,
) -> int:
    """Replace every token-to-vector layer under ``block`` (at a ``tok2vec`` key); returns how many.

    ``resolved`` is ``block`` with its references resolved: the new layers copy resolved
    values, since references into a removed tok2vec component would dangle.
    """
    count = 0
    for key, value in list(block.items()):
        if not isinstance(value, dict):
            continue
        where = path + [key]
        architecture = value.get("@architectures")
        if key != "tok2vec" or architecture is None:
            count += _replace_tok2vecs(value, resolved[key], where, resolved_config, tok2vecs, source)
            continue
        if architecture in TOK2VEC_LISTENERS:
            upstream = _upstream(value.get("upstream", "*"), tok2vecs, where, source)
            layer = resolved_config["components"][upstream]["model"]
            block[key] = _from_tok2vec_layer(layer, resolved[key].get("width"), [f"components.{upstream}.model"], source)
        elif architecture in TOK2VEC_LAYERS + HASH_EMBED_CNN:
            block[key] = _from_tok2vec_layer(resolved[key], None, where, source)
        else:
            raise ElmoConfigError(
                f"{source}: [{'.'.join(where)}] uses {architecture}, which init-config cannot replace with "
                f"ELMo. Replace it by spacy.Tok2VecListener.v1 (or spacy.Tok2Vec.v2) and run init-config "
                f"again, or edit the config by hand after the shipped one (python -m spacy_elmo config ner_elmo ner_elmo.cfg)."
            )
        count += 1
    return count


def _upstream(upstream: str, tok2vecs: List[str], where: List[str], source: str) -> str:
    if upstream == "*" and tok2vecs:
        return tok2vecs[0]
    if upstream in tok2vecs:
        return upstream
    raise ElmoConfigError(
        f'{source}: [{".".join(where)}] listens to upstream = "{upstream}", but the pipeline has no '
        f"tok2vec component of that name. Fix the listener's upstream and run init-config again."
    )


def _from_tok2vec_layer(layer: Dict[str, Any], width: Optional[int], where: List[str], source: str) -> Dict[str, Any]:
    """An ``ElmoTok2Vec.v1`` with the embeddings and encoder of ``layer`` (its resolved values)."""
    architecture = layer.get("@architectures")
    if architecture in HASH_EMBED_CNN:
        width = layer["width"]
        subwords = layer.get("subword_features", True)
        size = layer["embed_size"]
        embed = {
            "@architectures": "spacy.MultiHashEmbed.v2",
            "width": width,
            "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"] if subwords else ["NORM"],
            "rows": [size, size // 2, size // 2, size // 2] if subwords else [size],
            "include_static_vectors": bool(layer.get("pretrained_vectors")),
        }
        encode = {
            "@architectures": "spacy.MaxoutWindowEncoder.v2",
            "width": width,
            "depth": layer["depth"],
            "window_size": layer["window_size"],
            "maxout_pieces": layer["maxout_pieces"],
        }
        return _elmo_tok2vec(width, embed, encode)
    if (
        architecture not in TOK2VEC_LAYERS
        or not isinstance(layer.get("embed"), dict)
        or not isinstance(layer.get("encode"), dict)
    ):
        raise ElmoConfigError(
            f"{source}: [{'.'.join(where)}] is {architecture}, not a spacy.Tok2Vec.v2 with embed and encode "
            f"blocks, so init-config cannot carry its embeddings over to ELMo. Edit the config by hand after "
            f"the shipped one (python -m spacy_elmo config ner_elmo ner_elmo.cfg)."
        )
    encode = layer["encode"]
    width = width if isinstance(width, int) else encode.get("width", layer["embed"].get("width"))
    return _elmo_tok2vec(width, layer["embed"], encode)


def _elmo_tok2vec(width: int, embed: Dict[str, Any], encode: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "@architectures": ELMO_TOK2VEC,
        "width": width,
        "elmo": dict(LISTENER),
        "embed": copy.deepcopy(dict(embed)),
        "encode": copy.deepcopy(dict(encode)),
    }


def _remove_component(config: Dict[str, Any], name: str, source: str) -> None:
    pretraining = config.get("pretraining") or {}
    if pretraining.get("component") == name:
        raise ElmoConfigError(
            f'{source}: [pretraining] component = "{name}" pretrains the tok2vec that init-config replaces '
            f"with ELMo. Remove the [pretraining] block (ELMo is the pretrained part) and run init-config again."
        )
    config["nlp"]["pipeline"] = [n for n in config["nlp"]["pipeline"] if n != name]
    del config["components"][name]
    for section, key in (("nlp", "disabled"), ("training", "frozen_components"), ("training", "annotating_components")):
        names = config.get(section, {}).get(key)
        if isinstance(names, list) and name in names:
            config[section][key] = [n for n in names if n != name]
    config.get("initialize", {}).get("components", {}).pop(name, None)


def _elmo_component(weights: str, frozen: bool) -> Dict[str, Any]:
    from .pipeline.component import ELMO_DEFAULT_CONFIG

    settings = copy.deepcopy(dict(ELMO_DEFAULT_CONFIG))
    model = registry.fill({"model": {**settings.pop("model"), "weights": weights}}, validate=True)["model"]
    return {"factory": "elmo", **settings, "frozen": frozen, "model": dict(model)}


def check_weights(weights: str) -> str:
    """``weights`` if it is 'default', a published name, or an existing path; nothing is downloaded."""
    published = weights.lower() in PUBLISHED_MODELS or weights.lower() in manylangs_models.names()
    if weights.lower() == "default" or published or Path(weights).exists():
        return weights
    raise ElmoConfigError(
        f"--weights {weights!r} is not 'default', a published model ({', '.join(repr(n) for n in sorted(PUBLISHED_MODELS))}, "
        f"or '{manylangs_models.PREFIX}CODE' for an ELMoForManyLangs language, e.g. '{manylangs_models.PREFIX}de'), "
        f"nor an existing model directory or weights.hdf5 file."
    )


def check_vectors(vectors: str) -> str:
    """``vectors`` if it is an existing vectors directory or an installed spaCy package."""
    if Path(vectors).is_dir() or is_package(vectors):
        return vectors
    raise ElmoConfigError(
        f"--vectors {vectors!r} is neither a directory nor an installed spaCy package. Make a vectors directory "
        f"with 'python -m spacy init vectors LANG FILE DIR --mode floret' and pass DIR."
    )


def init_config(
    input_path: str,
    output_path: str,
    *,
    weights: str = "default",
    frozen: bool = True,
    vectors: Optional[str] = None,
    force: bool = False,
) -> List[str]:
    """Read ``input_path`` ('-': stdin), write the ELMo config to ``output_path`` ('-': stdout); returns the notes."""
    weights = check_weights(weights)
    if vectors is not None:
        vectors = check_vectors(vectors)
    if output_path != "-" and Path(output_path).exists() and not force:
        raise ElmoConfigError(f"{output_path} already exists: pass --force to overwrite it, or choose another OUT.")
    source = "<stdin>" if input_path == "-" else input_path
    try:
        text = sys.stdin.read() if input_path == "-" else Path(input_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ElmoConfigError(f"Cannot read the config {source}: {err}.") from None
    try:
        config = Config().from_str(text, interpolate=False)
    except Exception as err:  # thinc raises several types for text that is not a config
        raise ElmoConfigError(
            f"{source} is not a spaCy training config ({' '.join(str(err).split())}). Create one with "
            f"'python -m spacy init config CONFIG --pipeline ner' and pass that."
        ) from None
    result, notes = elmo_config(config, weights=weights, frozen=frozen, vectors=vectors, source=source)
    output = result.to_str()
    if output_path == "-":
        sys.stdout.write(output)
    else:
        Path(output_path).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output_path, output)
    return notes


def main(argv: Optional[List[str]] = None, prog: str = "python -m spacy_elmo init-config") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="a spaCy training config, e.g. from 'python -m spacy init config' ('-': stdin)")
    parser.add_argument("output", help="where to write the ELMo config ('-': stdout)")
    parser.add_argument(
        "--weights",
        default="default",
        help="the biLM: 'default', a published name (small, manylangs:de, ...), a model directory or a weights.hdf5 (default: default)",
    )
    tuning = parser.add_mutually_exclusive_group()
    tuning.add_argument(
        "--frozen", dest="frozen", action="store_true", default=True, help="keep the biLM's weights fixed (the default)"
    )
    tuning.add_argument("--fine-tune", dest="frozen", action="store_false", help="let the tasks' gradients fine-tune the biLM")
    parser.add_argument(
        "--vectors",
        default=None,
        help="static vectors to use beside ELMo (a directory from 'spacy init vectors ... --mode floret', or a "
        "package): include_static_vectors = true in the ELMo tok2vec's embeddings and [paths] vectors set",
    )
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    args = parser.parse_args(argv)
    try:
        notes = init_config(
            args.input, args.output, weights=args.weights, frozen=args.frozen, vectors=args.vectors, force=args.force
        )
    except ElmoConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.output != "-":
        print(f"Wrote {args.output}: 'python -m spacy train {args.output} --paths.train ... --paths.dev ...'", file=sys.stderr)
    return 0
