"""The ``elmo`` pipeline component: runs the biLM and stores its layers on each Doc."""

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import srsly
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc
from spacy.training import Example, validate_examples
from spacy.util import resolve_dot_names
from spacy.vocab import Vocab
from thinc.api import Config, ConfigValidationError, Model, Optimizer, set_dropout_rate
from thinc.types import Floats3d
from wasabi import msg

from ..errors import ElmoError, ElmoOptionsError, ElmoWeightsError
from ..files import write_if_changed
from ..layers.bilm_layer import elmo_shim, msgpack_or_error, serialized_source, weights_omitted
from ..layers.doc_pieces import prefill_docs
from ..layers.extensions import LAYERS_ATTR, install_extensions
from ..layers.listener import ElmoListener
from ..memory import large_allocations_returned
from .architectures import BILM_LAYER_REF, ELMO_BILM, default_model_config
from .hooks import install_vector_hooks
from .written_file import WrittenFile

DEFAULT_ELMO_MODEL = Config({"model": default_model_config()})["model"]
"""The factory's default ``model`` block: ``spacy-elmo.ElmoBiLM.v1`` with its own defaults."""

ELMO_DEFAULT_CONFIG: Dict[str, Any] = {
    "model": DEFAULT_ELMO_MODEL,
    "layer_weights": None,
    "gamma": 1.0,
    "vector_hooks": True,
    "frozen": True,
}
"""The ``elmo`` factory's default config (what ``init-config`` writes, with its own ``weights`` and ``frozen``)."""


@Language.factory(
    "elmo",
    default_config=ELMO_DEFAULT_CONFIG,
    assigns=["doc.tensor", f"doc._.{LAYERS_ATTR}", "doc.user_hooks", "doc.user_span_hooks", "doc.user_token_hooks"],
)
def make_elmo(
    nlp: Language,
    name: str,
    model: Model[List[Doc], List[Floats3d]],
    layer_weights: Optional[List[float]],
    gamma: float,
    vector_hooks: bool,
    frozen: bool,
) -> "ElmoComponent":
    """The ``elmo`` component: every biLM layer in ``doc._.elmo_layers``, their mix in
    ``doc.tensor``, and (with ``vector_hooks``) ``vector``/``similarity`` hooks that read it.

    model: a ``spacy-elmo.ElmoBiLM.v1`` model (which biLM, caches, precision).
    layer_weights: pre-softmax weights of the ``doc.tensor`` mix, one per layer (null: uniform).
    gamma: scale of the ``doc.tensor`` mix.
    vector_hooks: make ``token``/``span``/``doc`` vectors and similarity read ``doc.tensor``.
    frozen: true keeps the biLM's weights fixed; false lets the listeners' gradients fine-tune it.
    """
    return ElmoComponent(
        nlp.vocab, model, name, layer_weights=layer_weights, gamma=gamma, vector_hooks=vector_hooks, frozen=frozen
    )


class ElmoComponent(TrainablePipe):
    """Stores every biLM layer in ``doc._.elmo_layers`` ``(L+1, n, 2P)`` and their mix in
    ``doc.tensor`` ``(n, 2P)``: ``gamma · Σ_j softmax(layer_weights)_j · layer_j``
    (uniform weights by default); ``token``/``span``/``doc`` vectors read ``doc.tensor``.

    Downstream components read the layers through ``spacy-elmo.ElmoListener.v1``: during
    ``update`` the biLM runs once per batch and every listener gets its outputs. Frozen
    (the default), the biLM's weights never change and its layers are cached per
    sentence; with ``frozen = false`` the listeners' gradients fine-tune it.
    """

    def __init__(
        self,
        vocab: Vocab,
        model: Model[List[Doc], List[Floats3d]],
        name: str = "elmo",
        *,
        layer_weights: Optional[Sequence[float]] = None,
        gamma: float = 1.0,
        vector_hooks: bool = True,
        frozen: bool = True,
    ) -> None:
        self.vocab = vocab
        self.model = model
        self.name = name
        self.cfg: Dict[str, Any] = checked_settings(
            {"layer_weights": layer_weights, "gamma": gamma, "vector_hooks": vector_hooks, "frozen": frozen},
            f"[components.{name}]",
        )
        self.listener_map: Dict[str, List[ElmoListener]] = {}
        self._written_model = WrittenFile()
        install_extensions()
        if not model.has_ref(BILM_LAYER_REF):
            raise ElmoOptionsError(f"[components.{name}.model] must be a {ELMO_BILM} model, got {model.name!r}.")
        elmo_shim(model.get_ref(BILM_LAYER_REF)).config_path = f"[components.{name}.model]"
        self._set_frozen(frozen)

    def _set_frozen(self, frozen: bool) -> None:
        self.model.get_ref(BILM_LAYER_REF).attrs["frozen"] = frozen

    @property
    def listeners(self) -> List[ElmoListener]:
        return [listener for listeners in self.listener_map.values() for listener in listeners]

    @property
    def listening_components(self) -> List[str]:
        return list(self.listener_map)

    def add_listener(self, listener: ElmoListener, component_name: str) -> None:
        self.listener_map.setdefault(component_name, [])
        if listener not in self.listener_map[component_name]:
            self.listener_map[component_name].append(listener)
        self._share_dims(listener)

    def remove_listener(self, listener: ElmoListener, component_name: str) -> bool:
        if listener in self.listener_map.get(component_name, []):
            self.listener_map[component_name].remove(listener)
            if not self.listener_map[component_name]:
                del self.listener_map[component_name]
            return True
        return False

    def find_listeners(self, component: Any) -> None:
        """Register every ``ElmoListener`` in ``component``'s model that listens to us."""
        model = getattr(component, "model", None)
        if not isinstance(model, Model):
            return
        for node in model.walk():
            if isinstance(node, ElmoListener) and node.upstream_name in ("*", self.name):
                self.add_listener(node, component.name)

    def _share_dims(self, listener: ElmoListener) -> None:
        if self.model.has_dim("nO") and not listener.has_dim("nO"):
            listener.set_dim("nO", self.model.get_dim("nO"))
            listener.set_dim("nL", self.model.get_dim("nL"))

    def initialize(
        self, get_examples: Optional[Callable[[], Iterable[Example]]] = None, *, nlp: Optional[Language] = None
    ) -> None:
        """Load the biLM (from its files, or a download for a published name). A frozen biLM
        with its layer store on also computes the layers of the training corpus
        (``get_examples``) and of the dev corpus that ``nlp``'s config names, in batches of
        ``max_batch_tokens`` rather than training batches, and stores them for every later
        epoch, evaluation and run (see :func:`spacy_elmo.layers.bilm_layer.prefill`)."""
        self.model.initialize()
        for listener in self.listeners:
            self._share_dims(listener)
        bilm_layer = self.model.get_ref(BILM_LAYER_REF)
        if self.cfg["frozen"] and get_examples is not None and bilm_layer.attrs.get("layer_store", "off") != "off":
            docs = [eg.predicted for eg in get_examples()]
            if not _is_placeholder(docs):
                counts = prefill_docs(self.model, docs + _dev_docs(nlp))
                if counts["computed"]:
                    msg.info(
                        f"ELMo layer store: computed {counts['computed']:,} of {counts['sequences']:,} distinct "
                        f"sentences ({counts['tokens']:,} tokens), {counts['stored']:,} were stored already"
                        + (f"; {counts['not_stored']:,} could not be kept (raise layer_store_mb)" if counts["not_stored"] else "")
                    )

    def predict(self, docs: Iterable[Doc]) -> List[Floats3d]:
        docs = list(docs)
        if not docs:
            return []
        return self.model.predict(docs)

    def set_annotations(self, docs: Iterable[Doc], layers: Sequence[Floats3d]) -> None:
        if not layers:
            return
        mix = self.mix_weights(self.model.get_dim("nL"))
        for doc, doc_layers in zip(docs, layers):
            doc_layers = self.model.ops.to_numpy(doc_layers).astype(np.float32, copy=False)
            doc._.elmo_layers = doc_layers
            doc.tensor = np.ascontiguousarray(np.tensordot(mix, doc_layers, axes=1), dtype=np.float32)
            if self.cfg["vector_hooks"]:
                install_vector_hooks(doc)

    def mix_weights(self, n_layers: int) -> np.ndarray:
        """``gamma · softmax(layer_weights)``, the coefficients of ``doc.tensor``."""
        weights = self.cfg["layer_weights"]
        if weights is None:
            logits = np.zeros((n_layers,), dtype=np.float64)
        elif len(weights) != n_layers:
            raise ElmoOptionsError(
                f"[components.{self.name}] layer_weights has {len(weights)} values but the biLM has "
                f"{n_layers} layers (the token layer and {n_layers - 1} LSTM layers): give one per layer."
            )
        else:
            logits = np.asarray(weights, dtype=np.float64)
        coefficients = np.exp(logits - logits.max())
        return (self.cfg["gamma"] * coefficients / coefficients.sum()).astype(np.float32)

    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Optimizer] = None,
        losses: Optional[dict] = None,
    ) -> dict:
        """Run the biLM once for the batch and hand its layers to every listener.

        The listeners' gradients are summed; the biLM's backward pass runs once, after the
        last listener, and only when the component is not frozen. The loss reported (the
        "LOSS ELMO" column of ``spacy train``) is the squared norm of the gradients sent into
        a fine-tuned biLM, as spaCy's own tok2vec reports; a frozen biLM receives none, so it
        reports 0.
        """
        examples = list(examples)
        validate_examples(examples, "ElmoComponent.update")
        if losses is None:
            losses = {}
        losses.setdefault(self.name, 0.0)
        docs = [eg.predicted for eg in examples]
        if not docs or not self.listeners:
            return losses
        set_dropout_rate(self.model, drop)
        outputs, backprop = self.model.begin_update(docs)
        d_outputs = [self.model.ops.alloc3f(*layers.shape) for layers in outputs]

        def accumulate_gradient(one_d_outputs: List[Floats3d]) -> List[Doc]:
            if self.cfg["frozen"]:
                return []
            for total, d in zip(d_outputs, one_d_outputs):
                total += d
                losses[self.name] += float((d**2).sum(axis=None, keepdims=False))
            return []

        def backprop_once(one_d_outputs: List[Floats3d]) -> List[Doc]:
            accumulate_gradient(one_d_outputs)
            if not self.cfg["frozen"]:
                backprop(d_outputs)
                if sgd is not None:
                    self.finish_update(sgd)
            return []

        batch_id = ElmoListener.get_batch_id(docs)
        for listener in self.listeners[:-1]:
            listener.receive(batch_id, outputs, accumulate_gradient)
        self.listeners[-1].receive(batch_id, outputs, backprop_once)
        return losses

    def finish_update(self, sgd: Optimizer) -> None:
        if not self.cfg["frozen"]:
            self.model.finish_update(sgd)

    def get_loss(self, examples: Iterable[Example], scores: Any) -> Tuple[float, None]:
        return 0.0, None

    def add_label(self, label: str) -> int:
        raise NotImplementedError(f"The '{self.name}' component has no labels.")

    # ------------------------------------------------------------------ serialization

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = ()) -> None:
        """Write ``model``: the settings and the biLM (its options and weights) under one
        sha256, so one atomic rename replaces both and no crash can pair old settings with
        new weights.

        ``spacy train`` saves the pipeline at every evaluation. A frozen biLM whose weights and
        settings are unchanged since this component last wrote ``model`` is not serialized again:
        that file is copied (see :mod:`.written_file`), byte for byte. Otherwise the file is
        written only when its bytes differ from the file already there.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if "vocab" not in exclude:
            self.vocab.to_disk(path / "vocab", exclude=exclude)
        if "model" not in exclude:
            target = path / "model"
            key = self._model_key()
            if key is None or not self._written_model.copy_to(target, key):
                with large_allocations_returned():
                    write_if_changed(target, self._stored(self.model.to_bytes()))
                self._written_model.remember(target, key)

    def from_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = ()) -> "ElmoComponent":
        """Load what :meth:`to_disk` wrote; a missing, truncated or corrupted ``model`` file
        is an :class:`ElmoWeightsError` naming the file (see :meth:`_unpack`)."""
        path = Path(path)
        if "vocab" not in exclude:
            self.vocab.from_disk(path / "vocab", exclude=exclude)
        if "model" not in exclude:
            model_path = path / "model"
            if not model_path.is_file():
                what = "is a directory, not a file" if model_path.is_dir() else "is missing"
                raise ElmoWeightsError(
                    f"{model_path} {what}: the saved pipeline's '{self.name}' component has no "
                    f"stored biLM, so the pipeline is incomplete. {_SAVE_AGAIN}"
                )
            self._load_model_bytes(self._unpack(model_path.read_bytes(), str(model_path)), str(model_path))
        return self

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        """``vocab`` and ``model`` (as in :meth:`to_disk`), as :meth:`from_bytes` reads them."""
        data: Dict[str, Any] = {}
        if "vocab" not in exclude:
            data["vocab"] = self.vocab.to_bytes(exclude=exclude)
        if "model" not in exclude:
            key = self._model_key() if self._written_model.holds else None
            written = self._written_model.read(key) if key is not None else None
            data["model"] = written if written is not None else self._stored(self.model.to_bytes())
        return srsly.msgpack_dumps(data)

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = ()) -> "ElmoComponent":
        where = f"the '{self.name}' component's bytes"
        data = msgpack_or_error(
            bytes_data,
            lambda reason: (
                f"{where} cannot be decoded ({reason}): they are truncated or corrupted. Serialize the pipeline again."
            ),
        )
        if not isinstance(data, dict):
            raise ElmoWeightsError(f"{where} are not a serialized component. Serialize the pipeline again.")
        if "vocab" not in exclude and "vocab" in data:
            self.vocab.from_bytes(data["vocab"], exclude=exclude)
        if "model" not in exclude:
            if "model" not in data:
                raise ElmoWeightsError(
                    f"{where} hold no 'model' (its biLM): they are incomplete. Serialize the pipeline again "
                    f"without excluding 'model'."
                )
            source = f"the '{self.name}' component's serialized model"
            self._load_model_bytes(self._unpack(data["model"], source), source)
        return self

    def _model_key(self) -> Optional[str]:
        """A digest that names the bytes :meth:`_stored` would give for the model now, without
        serializing the biLM: its fingerprint (options, precision, every weight, computed again
        so that weights edited in place count), the settings and the rest of the model's bytes.
        None when the component is not frozen: then the weights change at every update."""
        if not self.cfg["frozen"]:
            return None
        fingerprint = elmo_shim(self.model.get_ref(BILM_LAYER_REF)).current_fingerprint()
        with weights_omitted():
            rest = self.model.to_bytes()
        return _sha256(fingerprint.encode("ascii"), _canonical(self.cfg), rest)

    def _stored(self, model_bytes: bytes) -> bytes:
        """The stored ``model``: the settings and the model's bytes, with a sha256 over both."""
        return srsly.msgpack_dumps(
            {"settings": self.cfg, "model": model_bytes, "sha256": _sha256(_canonical(self.cfg), model_bytes)}
        )

    def _unpack(self, data: bytes, source: str) -> bytes:
        """The model's bytes from a stored ``model`` (:meth:`_stored`), after verifying it.

        Damage is an :class:`ElmoWeightsError` naming ``source``; settings that pass the
        checksum are checked as a config's are. The settings in force stay those of the
        loading config, so a load-time override (``spacy.load(path, config=...)``) applies and
        ``nlp.config`` always tells what the component does.
        """
        stored = msgpack_or_error(
            data,
            lambda reason: (
                f"{source} cannot be decoded ({reason}): it is truncated or corrupted "
                f"(a process killed while writing it, a partial copy or download). {_SAVE_AGAIN}"
            ),
        )
        if not isinstance(stored, dict) or set(stored) != {"settings", "model", "sha256"}:
            raise ElmoWeightsError(
                f"{source} is not the stored biLM of an 'elmo' component saved by this version of spacy-elmo "
                f"(expected the keys settings, model, sha256). {_SAVE_AGAIN}"
            )
        settings, model_bytes = stored["settings"], stored["model"]
        if not isinstance(model_bytes, bytes) or stored["sha256"] != _sha256(_canonical(settings), model_bytes):
            raise ElmoWeightsError(f"{source} does not match its sha256 checksum: the file is corrupted. {_SAVE_AGAIN}")
        if not isinstance(settings, dict) or set(settings) != set(self.cfg):
            raise ElmoWeightsError(f"{source} holds other settings than {sorted(self.cfg)}. {_SAVE_AGAIN}")
        checked_settings(settings, source)
        return model_bytes

    def _load_model_bytes(self, data: bytes, source: str) -> None:
        """Load the stored biLM and the model's state; the runtime settings (batch size, piece
        length, caches) stay those of the loading config, so overrides apply to saved pipelines."""
        settings = [(node, dict(node.attrs)) for node in self.model.walk()]
        bilm_layer = self.model.get_ref(BILM_LAYER_REF)
        token_cache_size = elmo_shim(bilm_layer).cfg.get("token_cache_size")
        try:
            with serialized_source(source):
                self.model.from_bytes(data)
        except ElmoError:
            raise
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
            raise ElmoWeightsError(
                f"{source} cannot be read ({type(err).__name__}: {err}): the file is truncated or "
                f"corrupted (a process killed while writing it, a partial copy or download). {_SAVE_AGAIN}"
            ) from None
        for node, attrs in settings:
            node.attrs.update(attrs)
        shim = elmo_shim(bilm_layer)
        if token_cache_size is not None and shim.cfg.get("token_cache_size") != token_cache_size:
            shim.cfg["token_cache_size"] = token_cache_size
            shim.bilm.resize_token_cache(token_cache_size)
        self._set_frozen(self.cfg["frozen"])


def _is_placeholder(docs: List[Doc]) -> bool:
    """Whether ``docs`` is the one unannotated "x y z" doc that ``Language.initialize`` passes
    when it is called without data: nothing worth computing layers for."""
    return len(docs) == 1 and [token.text for token in docs[0]] == ["x", "y", "z"]


def _dev_docs(nlp: Optional[Language]) -> List[Doc]:
    """The dev corpus of ``nlp``'s training config as ``spacy train`` evaluates it, or none
    when the config names no readable one (a pipeline initialized outside ``spacy train``)."""
    if nlp is None:
        return []
    try:
        config = nlp.config.interpolate()
        name = config["training"]["dev_corpus"]
        (corpus,) = resolve_dot_names(config, [name])
        return [eg.predicted for eg in corpus(nlp)]
    except (ConfigValidationError, KeyError, ValueError, TypeError, OSError):
        return []


_SAVE_AGAIN = "Save the pipeline again from a working copy, or copy or download it again."


def checked_settings(settings: Dict[str, Any], where: str) -> Dict[str, Any]:
    """The component's settings, normalized; a wrong type or value is an
    :class:`ElmoOptionsError` naming ``where`` (a config block or a stored file)."""
    layer_weights, gamma = settings["layer_weights"], settings["gamma"]
    if layer_weights is not None and (
        not isinstance(layer_weights, (list, tuple))
        or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and np.isfinite(w) for w in layer_weights)
    ):
        raise ElmoOptionsError(
            f"{where} layer_weights must be null or a list of numbers (one per biLM layer, before softmax), got {layer_weights!r}."
        )
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not np.isfinite(gamma):
        raise ElmoOptionsError(f"{where} gamma must be a finite number, got {gamma!r}.")
    for flag in ("vector_hooks", "frozen"):
        if not isinstance(settings[flag], bool):
            raise ElmoOptionsError(f"{where} {flag} must be true or false, got {settings[flag]!r}.")
    return {
        "layer_weights": [float(w) for w in layer_weights] if layer_weights is not None else None,
        "gamma": float(gamma),
        "vector_hooks": settings["vector_hooks"],
        "frozen": settings["frozen"],
    }


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _sha256(*parts: bytes) -> str:
    """The sha256 of the parts' concatenation, without making it (a biLM is hundreds of MiB)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()
