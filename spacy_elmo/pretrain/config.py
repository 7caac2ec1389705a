"""The pretraining config: a confection (spaCy/Thinc-style) file, validated into typed sections.

Every setting is declared once, as a dataclass field with a ``help`` text: that declaration
gives the default, the type check, the error message and the ``--help`` listing.
Command-line overrides use spaCy's dotted form (``--training.max_steps 200``).
"""

import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from confection import Config

from ..bilm.options import ElmoOptions
from ..bilm.training_precision import TRAINING_PRECISIONS
from ..errors import ElmoOptionsError
from ..files import PathLike
from .errors import PretrainConfigError


def _setting(default: Any, help: str, *, choices: Optional[Sequence[Any]] = None, minimum: Optional[float] = None) -> Any:
    """A config field: its default plus the metadata the validator and ``--help`` read."""
    kwargs: Dict[str, Any] = {"metadata": {"help": help, "choices": choices, "minimum": minimum}}
    if isinstance(default, list):
        kwargs["default_factory"] = lambda: json.loads(json.dumps(default))
    else:
        kwargs["default"] = default
    return field(**kwargs)


@dataclass(frozen=True)
class PathsConfig:
    """[paths]: where the text is."""

    train: Optional[str] = _setting(None, "training text: a file, a glob or a comma-separated list of them; plain or .gz")
    dev: Optional[str] = _setting(None, "held-out text for perplexity during training (same forms as train)")
    test: Optional[str] = _setting(None, "optional test text, evaluated once at the end")


@dataclass(frozen=True)
class DataConfig:
    """[data]: how lines become tokenised sentences and sentences become batches."""

    format: str = _setting(
        "sentences",
        "'sentences': one whitespace-tokenised sentence per line; 'paragraphs': raw text, split into "
        "sentences and tokenised by spacy.blank(lang) + sentencizer",
        choices=("sentences", "paragraphs"),
    )
    lang: str = _setting("en", "spaCy language code of the tokenizer for format 'paragraphs'")
    max_sentence_length: int = _setting(
        100, "sentences longer than this are cut into pieces of at most this many tokens", minimum=1
    )
    min_tokens: int = _setting(1, "sentences with fewer tokens are dropped", minimum=1)
    max_tokens: Optional[int] = _setting(
        None, "sentences with more tokens are dropped (tables, lists); null keeps all", minimum=1
    )
    shuffle_buffer: int = _setting(20000, "sentences held in the streaming shuffle buffer (1 = file order)", minimum=1)
    sort_pool: int = _setting(2000, "consecutive shuffled sentences sorted by length together, then cut into batches", minimum=1)
    pipe_batch_size: int = _setting(256, "paragraphs per nlp.pipe batch for format 'paragraphs'", minimum=1)


@dataclass(frozen=True)
class VocabConfig:
    """[vocab]: the softmax vocabulary (inputs are always characters)."""

    size: int = _setting(50000, "maximum vocabulary size, including <S>, </S> and <UNK>", minimum=4)
    min_count: int = _setting(1, "words seen fewer times are left out (they become <UNK> targets)", minimum=1)
    max_tokens_for_vocab: int = _setting(
        10_000_000, "tokens counted, from the start of the training files, to build it", minimum=1
    )
    path: Optional[str] = _setting(None, "use this vocabulary file (one word per line, <S> </S> <UNK> first) instead of counting")


@dataclass(frozen=True)
class LstmConfig:
    """[model.lstm]: the 'lstm' block of options.json."""

    dim: int = _setting(512, "LSTM cell size H", minimum=1)
    projection_dim: int = _setting(128, "projection size P (the biLM outputs 2P per layer)", minimum=1)
    n_layers: int = _setting(2, "LSTM layers per direction", minimum=1)
    cell_clip: Optional[float] = _setting(3.0, "clip of the LSTM cell state (null: none)", minimum=0)
    proj_clip: Optional[float] = _setting(3.0, "clip of the projected LSTM output (null: none)", minimum=0)
    use_skip_connections: bool = _setting(True, "residual connections between LSTM layers")


@dataclass(frozen=True)
class CharCnnConfig:
    """[model.char_cnn]: the 'char_cnn' block of options.json."""

    embedding_dim: int = _setting(16, "character embedding size", minimum=1)
    filters: List[List[int]] = _setting(
        [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256]], "[width, count] of every convolution bank"
    )
    n_highway: int = _setting(1, "highway layers after the convolutions", minimum=0)
    activation: str = _setting("relu", "activation after max-pooling", choices=("relu", "tanh"))
    max_characters_per_token: int = _setting(50, "characters per token, begin/end-of-word included", minimum=3)


@dataclass(frozen=True)
class TrainingConfig:
    """[training]: objective, optimiser, budget, evaluation, checkpoints, fine-tuning."""

    seed: int = _setting(0, "seed of initialisation, data order, dropout and softmax samples", minimum=0)
    optimizer: str = _setting("adam", "'adam', or 'adagrad' as in bilm-tf (initial accumulator 1.0)", choices=("adam", "adagrad"))
    learn_rate: Optional[float] = _setting(None, "learning rate; null: 0.001 for adam, 0.2 for adagrad", minimum=0)
    lr_warmup_steps: int = _setting(0, "linear learning-rate warm-up from 0 over this many steps", minimum=0)
    lr_decay: str = _setting(
        "none",
        "after warm-up: 'none' (constant), or 'linear' / 'cosine' decay to 0 at the end of the budget "
        "(max_steps or max_tokens, whichever is nearer); a run may switch on --resume",
        choices=("none", "linear", "cosine"),
    )
    grad_clip: Optional[float] = _setting(
        None, "global gradient-norm clip; null: 1.0 for adam, 10.0 for adagrad; 0: off", minimum=0
    )
    dropout: float = _setting(0.1, "dropout on every LSTM layer's input and on the top output before the softmax", minimum=0)
    precision: str = _setting(
        "fp32",
        "'fp32', or 'bf16': the biLM's matmuls and convolutions take bfloat16 operands in training (torch.autocast; "
        "weights, optimiser state, LSTM cell state, softmax and evaluation stay float32): faster on CPUs with "
        "AVX-512 BF16/AMX and on GPUs with bfloat16 tensor cores; a run may switch on --resume",
        choices=TRAINING_PRECISIONS,
    )
    batch_tokens: int = _setting(4096, "token slots per batch, boundaries and padding included (rows x (longest + 2))", minimum=3)
    max_steps: Optional[int] = _setting(None, "stop after this many steps (null: no limit)", minimum=0)
    max_tokens: Optional[int] = _setting(
        None, "stop after this many training tokens (words, all processes; null: no limit)", minimum=0
    )
    max_minutes: Optional[float] = _setting(
        None, "stop after this much training wall time, summed over resumes (null: no limit)", minimum=0
    )
    max_epochs: Optional[int] = _setting(None, "stop after this many passes over the training data (null: no limit)", minimum=1)
    log_every: int = _setting(100, "steps between lines in log.jsonl", minimum=1)
    eval_every: int = _setting(1000, "steps between dev perplexity evaluations", minimum=1)
    eval_max_sentences: Optional[int] = _setting(None, "use only the first N dev/test sentences (null: all)", minimum=1)
    checkpoint_every: int = _setting(
        1000, "steps between checkpoints (OUTPUT_DIR/checkpoint-<step>, the newest two kept)", minimum=1
    )
    softmax: str = _setting(
        "adaptive",
        "'adaptive' (AdaptiveLogSoftmaxWithLoss) or 'sampled' (bilm-tf's log-uniform sampled softmax)",
        choices=("sampled", "adaptive"),
    )
    n_samples: int = _setting(8192, "negative samples per batch of the sampled softmax", minimum=1)
    adaptive_cutoffs: List[int] = _setting(
        [2000, 10000], "cluster boundaries of the adaptive softmax (those >= vocab size are dropped)"
    )
    adaptive_div_value: float = _setting(4.0, "size ratio between successive adaptive softmax clusters", minimum=1)
    init_from: Optional[str] = _setting(
        None,
        "fine-tune: 'default', a published model name or a directory with options.json + weights.hdf5 ([model] is then ignored)",
    )
    warmup_softmax_steps: int = _setting(
        0, "fine-tune: train only the fresh softmax (biLM frozen) for this many steps", minimum=0
    )
    unfreeze: str = _setting(
        "all",
        "after the softmax warm-up: 'all' at once or 'gradual' (top LSTM layer first, token encoder last)",
        choices=("all", "gradual"),
    )
    unfreeze_interval: int = _setting(1000, "'gradual': steps between unfreezing one more block", minimum=1)
    layer_lr_decay: float = _setting(1.0, "learning-rate factor per block below the top LSTM layer (1.0: off)", minimum=0)

    def budget_spent(self, step: int, tokens: int, seconds: Optional[float] = None) -> Optional[float]:
        """How much of the budget is spent, in [0, 1]: the largest fraction of ``max_steps``,
        ``max_tokens`` and, when ``seconds`` is given, ``max_minutes`` among those set; None
        when none is. The learning-rate schedule leaves ``seconds`` out so that it depends on
        the work done only and a resumed run repeats it exactly; the progress bar passes it."""
        fractions = []
        if self.max_steps:
            fractions.append(step / self.max_steps)
        if self.max_tokens:
            fractions.append(tokens / self.max_tokens)
        if seconds is not None and self.max_minutes:
            fractions.append(seconds / (60 * self.max_minutes))
        return min(1.0, max(fractions)) if fractions else None


SECTIONS: Tuple[Tuple[str, Type], ...] = (
    ("paths", PathsConfig),
    ("data", DataConfig),
    ("vocab", VocabConfig),
    ("model.lstm", LstmConfig),
    ("model.char_cnn", CharCnnConfig),
    ("training", TrainingConfig),
)


@dataclass(frozen=True)
class PretrainConfig:
    """The whole validated config; ``model`` is None when ``training.init_from`` supplies it."""

    paths: PathsConfig
    data: DataConfig
    vocab: VocabConfig
    training: TrainingConfig
    model: Optional[ElmoOptions]
    source: str
    resolved: Dict[str, Any]

    def to_config(self) -> Config:
        """The effective config (defaults filled, overrides applied), to write next to the outputs."""
        return Config(json.loads(json.dumps(self.resolved)))


def parse_overrides(args: Sequence[str]) -> Dict[str, Any]:
    """``["--training.max_steps", "200", "--paths.train=a.txt"]`` → ``{"training.max_steps": 200, ...}``.

    Values are read as JSON when they parse (numbers, true/false, null, lists), else kept as strings.
    """
    overrides: Dict[str, Any] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("--") or "." not in arg.split("=", 1)[0]:
            raise PretrainConfigError(
                f"Unexpected argument {arg!r}. Config overrides look like --section.key VALUE "
                f"(e.g. --training.max_steps 200); see --help for the sections and keys."
            )
        key, has_value, value = arg[2:].partition("=")
        if not has_value:
            if index + 1 >= len(args) or (args[index + 1].startswith("--") and "." in args[index + 1]):
                raise PretrainConfigError(f"Override --{key} has no value: write --{key} VALUE.")
            index += 1
            value = args[index]
        overrides[key.replace("-", "_")] = _parse_value(value)
        index += 1
    return overrides


def load_config(path: PathLike, overrides: Optional[Dict[str, Any]] = None) -> PretrainConfig:
    """Read, override, interpolate and validate a pretraining config file."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise PretrainConfigError(
            f"Config file not found: {path}. Pass a config file; python -m spacy_elmo config pretrain_small pretrain_small.cfg writes the shipped one."
        )
    try:
        raw = Config().from_str(path.read_text(encoding="utf-8"), interpolate=False)
    except Exception as err:  # confection reports syntax problems with several exception types
        raise PretrainConfigError(f"Config file {path} could not be parsed: {err}".rstrip()) from None
    data = json.loads(json.dumps(dict(raw)))
    for dotted, value in (overrides or {}).items():
        _apply_override(data, dotted, value, source)
    try:
        data = dict(Config(data).interpolate())
    except Exception as err:
        raise PretrainConfigError(f"{source}: a ${{...}} reference could not be resolved: {err}".rstrip()) from None
    return validate(data, source)


def validate(data: Dict[str, Any], source: str) -> PretrainConfig:
    """Typed sections from a parsed config dictionary; ``source`` names it in errors."""
    _check_section_names(data, source)
    values: Dict[str, Any] = {}
    resolved: Dict[str, Any] = {}
    for name, cls in SECTIONS:
        section = _lookup(data, name)
        if not isinstance(section, dict):
            raise PretrainConfigError(f"{source}: [{name}] must be a section of key = value lines.")
        values[name] = _build_section(cls, section, name, source)
        top, _, sub = name.partition(".")
        target = resolved.setdefault(top, {}) if sub else resolved
        target[sub or top] = {f.name: getattr(values[name], f.name) for f in fields(cls)}
    for check in CROSS_CHECKS:
        problem = check(values["data"], values["training"])
        if problem:
            raise PretrainConfigError(f"{source}: {problem}")
    training: TrainingConfig = values["training"]
    model = None
    if training.init_from is None:
        model = _model_options(values["model.lstm"], values["model.char_cnn"], source)
    return PretrainConfig(
        paths=values["paths"],
        data=values["data"],
        vocab=values["vocab"],
        training=training,
        model=model,
        source=source,
        resolved=resolved,
    )


def _check_section_names(data: Dict[str, Any], source: str) -> None:
    known_top = {name.split(".")[0] for name, _ in SECTIONS}
    for name in data:
        if name not in known_top:
            raise PretrainConfigError(
                f"{source}: unknown section [{name}]. Known sections: {', '.join('[' + s + ']' for s, _ in SECTIONS)}."
            )
    for name in data.get("model") or {}:
        if name not in ("lstm", "char_cnn"):
            raise PretrainConfigError(f"{source}: unknown section [model.{name}]; use [model.lstm] and [model.char_cnn].")


def _token_bounds(data: DataConfig, training: TrainingConfig) -> Optional[str]:
    if data.max_tokens is not None and data.max_tokens < data.min_tokens:
        return f"[data] max_tokens ({data.max_tokens}) is below min_tokens ({data.min_tokens}); no sentence could pass both."
    return None


def _batch_holds_a_sentence(data: DataConfig, training: TrainingConfig) -> Optional[str]:
    needed = data.max_sentence_length + 2
    if training.batch_tokens < needed:
        return (
            f"[training] batch_tokens ({training.batch_tokens}) must hold one sentence of [data] max_sentence_length "
            f"({data.max_sentence_length}) plus <S> and </S>: raise batch_tokens to at least {needed} or lower "
            f"max_sentence_length."
        )
    return None


def _dropout_below_one(data: DataConfig, training: TrainingConfig) -> Optional[str]:
    return f"[training] dropout must be in [0, 1), got {training.dropout}." if training.dropout >= 1 else None


def _has_budget(data: DataConfig, training: TrainingConfig) -> Optional[str]:
    if all(v is None for v in (training.max_steps, training.max_tokens, training.max_minutes, training.max_epochs)):
        return (
            "[training] sets no budget, so training would never stop. Set at least one of max_steps, max_tokens, "
            "max_minutes or max_epochs (e.g. --training.max_steps 10000)."
        )
    return None


def _decay_has_an_end(data: DataConfig, training: TrainingConfig) -> Optional[str]:
    if training.lr_decay != "none" and not (training.max_steps or training.max_tokens):
        return (
            f"[training] lr_decay = {training.lr_decay!r} decays to 0 at the end of max_steps or max_tokens, "
            f"and neither is set. Set one of them, or lr_decay = 'none'."
        )
    return None


def _increasing_cutoffs(data: DataConfig, training: TrainingConfig) -> Optional[str]:
    cutoffs = list(training.adaptive_cutoffs)
    if not cutoffs or any(c < 1 for c in cutoffs) or sorted(set(cutoffs)) != cutoffs:
        return f"[training] adaptive_cutoffs must be a non-empty increasing list of positive integers, got {cutoffs!r}."
    return None


CROSS_CHECKS: Tuple[Callable[[DataConfig, TrainingConfig], Optional[str]], ...] = (
    _token_bounds,
    _batch_holds_a_sentence,
    _dropout_below_one,
    _has_budget,
    _decay_has_an_end,
    _increasing_cutoffs,
)
"""Checks that involve more than one setting; each returns what is wrong, or None."""


def help_epilog() -> str:
    """Every section and key with its default and meaning, for ``--help``."""
    lines = ["config sections and keys (default in brackets; override any as --section.key VALUE):"]
    for name, cls in SECTIONS:
        lines.append(f"  [{name}]")
        for f in fields(cls):
            if f.default is not MISSING:
                default = f.default
            elif f.default_factory is not MISSING:
                default = f.default_factory()
            else:
                raise TypeError(f"[{name}] {f.name} has no default; declare it with _setting().")
            lines.append(f"    {f.name:<26} {f.metadata['help']} [{json.dumps(default)}]")
    return "\n".join(lines)


def _model_options(lstm: LstmConfig, cnn: CharCnnConfig, source: str) -> ElmoOptions:
    """The [model] sections as validated options (ElmoOptions.from_dict checks them as it
    checks an options.json)."""
    unchecked = ElmoOptions(
        lstm_dim=lstm.dim,
        projection_dim=lstm.projection_dim,
        n_layers=lstm.n_layers,
        cell_clip=lstm.cell_clip,
        proj_clip=lstm.proj_clip,
        use_skip_connections=lstm.use_skip_connections,
        char_embedding_dim=cnn.embedding_dim,
        filters=tuple(tuple(f) for f in cnn.filters),  # type: ignore[misc]  # pairs: from_dict checks
        n_highway=cnn.n_highway,
        activation=cnn.activation,
        max_characters_per_token=cnn.max_characters_per_token,
    )
    try:
        return ElmoOptions.from_dict(unchecked.to_dict(), source=f"{source} [model]")
    except ElmoOptionsError as err:
        raise PretrainConfigError(str(err)) from None


def _lookup(data: Dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node


def _apply_override(data: Dict[str, Any], dotted: str, value: Any, source: str) -> None:
    *section_parts, key = dotted.split(".")
    section_name = ".".join(section_parts)
    known = dict(SECTIONS)
    if section_name not in known:
        raise PretrainConfigError(
            f"Override --{dotted}: unknown section [{section_name}]. Known sections: {', '.join('[' + s + ']' for s in known)}."
        )
    if key not in {f.name for f in fields(known[section_name])}:
        raise PretrainConfigError(
            f"Override --{dotted}: [{section_name}] has no key {key!r}. Known keys: "
            f"{', '.join(f.name for f in fields(known[section_name]))}."
        )
    node = data
    for part in section_parts:
        node = node.setdefault(part, {})
    node[key] = value


def _build_section(cls: Type, section: Dict[str, Any], name: str, source: str) -> Any:
    declared = {f.name: f for f in fields(cls)}
    for key in section:
        if key not in declared:
            raise PretrainConfigError(
                f"{source}: unknown key {key!r} in [{name}]. Known keys: {', '.join(declared)}. "
                f"Fix the spelling or remove the line."
            )
    hints = get_type_hints(cls)
    kwargs = {}
    for key, f in declared.items():
        if key in section:
            kwargs[key] = _check(section[key], hints[key], f.metadata, f"[{name}] {key}", source)
    return cls(**kwargs)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


TYPE_CHECKS: Dict[Any, Tuple[Callable[[Any], bool], str]] = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (_is_int, "an integer"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    str: (lambda v: isinstance(v, str), "a string"),
    List[int]: (lambda v: isinstance(v, list) and all(map(_is_int, v)), "a list of integers"),
    List[List[int]]: (
        lambda v: isinstance(v, list) and all(isinstance(pair, list) and all(map(_is_int, pair)) for pair in v),
        "a list of [width, count] integer pairs",
    ),
}
"""Every type a setting is declared with: how a value is checked and how the type is named in errors."""


def _check(value: Any, annotation: Any, meta: Mapping[str, Any], where: str, source: str) -> Any:
    optional = get_origin(annotation) is Union and type(None) in get_args(annotation)
    if value is None:
        if optional:
            return None
        raise PretrainConfigError(f"{source}: {where} must be set, got null.")
    kind = next(a for a in get_args(annotation) if a is not type(None)) if optional else annotation
    is_valid, described = TYPE_CHECKS[kind]
    if not is_valid(value):
        raise PretrainConfigError(f"{source}: {where} must be {described}{' or null' if optional else ''}, got {value!r}.")
    value = float(value) if kind is float else value
    if meta.get("choices") and value not in meta["choices"]:
        raise PretrainConfigError(f"{source}: {where} must be one of {list(meta['choices'])}, got {value!r}.")
    if meta.get("minimum") is not None and value < meta["minimum"]:
        raise PretrainConfigError(f"{source}: {where} must be >= {meta['minimum']}, got {value!r}.")
    return value


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
