"""How downstream components (NER, textcat, …) read the ``elmo`` component's layers.

The listener receives the biLM's per-doc layers from the upstream ``elmo`` component during
``update`` (the biLM runs once per batch for all listeners) and reads ``doc._.elmo_layers``
otherwise, as spaCy's listener protocol prescribes. The ``ElmoListener.v1`` architecture
(:mod:`spacy_elmo.pipeline.architectures`) chains it with the task's own scalar mix, so replacing the listener
by a copy of the upstream model (``nlp.replace_listeners``) keeps the learned mix.
"""

from typing import Callable, List, Optional, Tuple

from spacy import Errors
from spacy.tokens import Doc
from thinc.api import Model
from thinc.types import Floats3d

from .extensions import install_extensions

Backprop = Callable[[List[Floats3d]], List[Doc]]


class ElmoListener(Model):
    """Passes on the upstream ``elmo`` component's layers, ``(L+1, len(doc), 2P)`` per doc."""

    name = "elmo-listener"

    def __init__(self, upstream_name: str, grad_factor: float) -> None:
        super().__init__(self.name, _listener_forward, dims={"nO": None, "nL": None}, attrs={"grad_factor": grad_factor})
        install_extensions()
        self.upstream_name = upstream_name
        self._batch_id: Optional[int] = None
        self._outputs: Optional[List[Floats3d]] = None
        self._backprop: Optional[Backprop] = None

    @classmethod
    def get_batch_id(cls, docs: List[Doc]) -> int:
        """A content hash of the batch, to check that a received batch is the one asked for."""
        return sum(sum(token.orth for token in doc) for doc in docs)

    def receive(self, batch_id: int, outputs: List[Floats3d], backprop: Backprop) -> None:
        self._batch_id = batch_id
        self._outputs = outputs
        self._backprop = backprop

    def verify_inputs(self, docs: List[Doc]) -> bool:
        if self._batch_id is None and self._outputs is None:
            raise ValueError(Errors.E954)
        batch_id = self.get_batch_id(docs)
        if batch_id != self._batch_id:
            raise ValueError(Errors.E953.format(id1=batch_id, id2=self._batch_id))
        return True


def _listener_forward(model: ElmoListener, docs: List[Doc], is_train: bool) -> Tuple[List[Floats3d], Callable]:
    if is_train and model._outputs is not None:
        model.verify_inputs(docs)
        outputs, upstream_backprop = model._outputs, model._backprop
        grad_factor = model.attrs["grad_factor"]

        def backprop(d_outputs: List[Floats3d]) -> List[Doc]:
            if grad_factor != 1.0:
                d_outputs = [d * grad_factor for d in d_outputs]
            return upstream_backprop(d_outputs)  # type: ignore[misc]

        model._outputs = model._backprop = None
        return outputs, backprop
    if is_train and any(doc._.elmo_layers is None for doc in docs if len(doc)):
        raise ValueError(Errors.E203.format(name="elmo"))
    outputs = [_read_layers(model, doc) for doc in docs]
    return outputs, lambda d_outputs: []


def _read_layers(model: ElmoListener, doc: Doc) -> Floats3d:
    layers = doc._.elmo_layers
    if layers is None:
        return model.ops.alloc3f(model.get_dim("nL"), len(doc), model.get_dim("nO"))
    return model.ops.asarray3f(layers)
