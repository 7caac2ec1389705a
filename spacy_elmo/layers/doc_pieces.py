"""Docs to the token sequences the biLM reads, and the biLM's layers back to every token.

Whitespace-only tokens are left out: the biLM never saw them in training and they would
disturb their neighbours' context; they get zero vectors. A doc with more real tokens than
``max_piece_length`` is read in pieces: its sentences when it has sentence boundaries,
consecutive windows otherwise (a sentence longer than the limit is windowed too), so memory
stays bounded for any document length.
"""

from typing import Callable, Dict, Iterable, List, Optional, Tuple

from spacy.tokens import Doc
from thinc.api import Model
from thinc.types import Floats3d

from ..bilm.batching import DEFAULT_MAX_PIECE_LENGTH
from ..errors import ElmoOptionsError
from .bilm_layer import bilm_options, prefill

Piece = List[int]


def doc_pieces(doc: Doc, max_piece_length: int) -> List[Piece]:
    """Token indices of each piece of ``doc`` the biLM reads as one sentence."""
    kept = [token.i for token in doc if not token.is_space]
    if len(kept) <= max_piece_length:
        return [kept] if kept else []
    if doc.has_annotation("SENT_START"):
        groups = [[token.i for token in sent if not token.is_space] for sent in doc.sents]
    else:
        groups = [kept]
    return [group[start : start + max_piece_length] for group in groups for start in range(0, len(group), max_piece_length)]


def doc_sequences(docs: List[Doc], max_piece_length: int) -> Tuple[List[List[Piece]], List[List[str]]]:
    """Each doc's pieces, and the token sequences the biLM reads for them, in order."""
    pieces = [doc_pieces(doc, max_piece_length) for doc in docs]
    sequences = [[doc[i].text for i in piece] for doc, doc_piece_list in zip(docs, pieces) for piece in doc_piece_list]
    return pieces, sequences


def prefill_docs(model: Model, docs: Iterable[Doc], *, progress: bool = True) -> Dict[str, int]:
    """Store the frozen biLM's layers of every piece of ``docs`` before training reads them
    (see :func:`spacy_elmo.layers.bilm_layer.prefill`); ``model`` is a :func:`with_doc_pieces` model."""
    max_length = model.attrs["max_piece_length"]
    sequences = [sequence for doc in docs for sequence in doc_sequences([doc], max_length)[1]]
    return prefill(model.layers[0], sequences, progress=progress)


def with_doc_pieces(bilm: Model, max_piece_length: int) -> Model[List[Doc], List[Floats3d]]:
    """Wrap a layer over token sequences so that it maps docs to ``(L+1, len(doc), 2P)``."""
    if not isinstance(max_piece_length, int) or max_piece_length < 1:
        raise ElmoOptionsError(
            f"max_piece_length must be a positive integer, got {max_piece_length!r}: the number of tokens the biLM "
            f"reads as one sequence at most (default {DEFAULT_MAX_PIECE_LENGTH}); longer docs are read in pieces."
        )
    return Model(
        "elmo-doc-pieces",
        _forward,
        init=_init,
        layers=[bilm],
        attrs={"max_piece_length": max_piece_length},
        dims={"nO": None, "nL": None},
    )


def _init(model: Model, X: Optional[List[Doc]] = None, Y: Optional[List[Floats3d]] = None) -> None:
    model.layers[0].initialize()
    _set_dims(model)


def _set_dims(model: Model) -> None:
    if not model.has_dim("nO"):
        options = bilm_options(model.layers[0])
        model.set_dim("nO", options.output_dim)
        model.set_dim("nL", options.n_output_layers)


def _forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[List[Floats3d], Callable]:
    _set_dims(model)
    bilm = model.layers[0]
    max_length = model.attrs["max_piece_length"]
    pieces, sequences = doc_sequences(docs, max_length)
    piece_outputs, backprop_bilm = bilm(sequences, is_train)
    n_layers, width = model.get_dim("nL"), model.get_dim("nO")
    outputs = []
    position = 0
    for doc, doc_piece_list in zip(docs, pieces):
        out = model.ops.alloc3f(n_layers, len(doc), width)
        for piece in doc_piece_list:
            out[:, piece] = piece_outputs[position]
            position += 1
        outputs.append(out)

    def backprop(d_outputs: List[Floats3d]) -> List[Doc]:
        d_pieces = [d_out[:, piece] for d_out, doc_piece_list in zip(d_outputs, pieces) for piece in doc_piece_list]
        backprop_bilm(d_pieces)
        return []

    return outputs, backprop
