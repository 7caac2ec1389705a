"""How downstream components (NER, textcat, …) read the ``elmo`` component's layers.

The listener receives the biLM's per-doc layers from the upstream ``elmo`` component during
``update`` (the biLM runs once per batch for all listeners) and reads ``doc._.elmo_layers``
otherwise, as spaCy's listener protocol prescribes. ``ElmoListener.v1`` chains it with the
task's own :func:`ScalarMix`, so replacing the listener by a copy of the upstream model
(``nlp.replace_listeners``) keeps the learned mix.
"""

from typing import Callable, List, Optional, Tuple

from spacy import Errors
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Maxout, Model, chain, concatenate, with_array
from thinc.types import Floats2d, Floats3d

from ..layers.scalar_mix import ScalarMix

Backprop = Callable[[List[Floats3d]], List[Doc]]


class ElmoListener(Model):
    """Passes on the upstream ``elmo`` component's layers, ``(L+1, len(doc), 2P)`` per doc."""

    name = "elmo-listener"

    def __init__(self, upstream_name: str, grad_factor: float) -> None:
        super().__init__(self.name, _listener_forward, dims={"nO": None, "nL": None}, attrs={"grad_factor": grad_factor})
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


@registry.architectures("spacy-elmo.ElmoListener.v1")
def ElmoListener_v1(
    upstream: str = "*",
    grad_factor: float = 1.0,
    l2_penalty: float = 0.0,
    dropout: float = 0.0,
    layer_norm: bool = False,
) -> Model[List[Doc], List[Floats2d]]:
    """The upstream ``elmo`` layers mixed by this task's own learned scalar mix.

    upstream: name of the ``elmo`` component to listen to, or "*" for any.
    grad_factor: scales the gradient sent to the biLM (0 keeps it unchanged by this task).
    l2_penalty: λ of the penalty λ Σ w² on the mix weights (the paper used 0.001).
    dropout: dropout on the mixed vectors during training.
    layer_norm: standardise each layer over the batch before mixing (upstream ``do_layer_norm``).
    """
    listener = ElmoListener(upstream, grad_factor)
    model = chain(listener, ScalarMix(l2_penalty=l2_penalty, dropout=dropout, layer_norm=layer_norm))
    model.set_ref("listener", listener)
    return model


@registry.architectures("spacy-elmo.ElmoTok2Vec.v1")
def ElmoTok2Vec_v1(
    elmo: Model[List[Doc], List[Floats2d]],
    embed: Model[List[Doc], List[Floats2d]],
    width: int,
    encode: Optional[Model[List[Floats2d], List[Floats2d]]] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """ELMo concatenated with spaCy's own token embeddings (as in the paper), projected to
    ``width`` by a Maxout layer, then an optional contextual encoder."""
    model = chain(concatenate(elmo, embed), with_array(Maxout(width, nP=3, normalize=True)))
    if encode is not None:
        model = chain(model, encode)
    model.set_dim("nO", width)
    model.set_ref("elmo", elmo)
    return model
