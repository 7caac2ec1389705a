"""``vector`` and ``similarity`` hooks that read ``doc.tensor``, the component's layer mix.

spaCy only falls back to ``doc.tensor`` for vectors when the vocab has no static vectors;
the hooks make ELMo vectors win in pipelines that do have them. Functions are module level
so that docs holding them can be copied and pickled.
"""

from typing import Union

import numpy as np
from spacy.lexeme import Lexeme
from spacy.tokens import Doc, Span, Token


def install_vector_hooks(doc: Doc) -> None:
    """Make ``token.vector``, ``span.vector`` and ``doc.vector`` (and ``similarity``) use ELMo."""
    doc.user_hooks["vector"] = doc_vector
    doc.user_hooks["similarity"] = similarity
    doc.user_span_hooks["vector"] = span_vector
    doc.user_span_hooks["similarity"] = similarity
    doc.user_token_hooks["vector"] = token_vector
    doc.user_token_hooks["similarity"] = similarity


def token_vector(token: Token) -> np.ndarray:
    return token.doc.tensor[token.i]


def span_vector(span: Span) -> np.ndarray:
    return _mean(span.doc.tensor[span.start : span.end], span.doc.tensor.shape[-1])


def doc_vector(doc: Doc) -> np.ndarray:
    return _mean(doc.tensor, doc.tensor.shape[-1])


def similarity(this: Union[Doc, Span, Token], other: Union[Doc, Span, Token, Lexeme]) -> float:
    """Cosine of the two vectors; 0.0 when either is all zeros (e.g. a whitespace token)."""
    a = np.asarray(this.vector, dtype=np.float32)
    b = np.asarray(other.vector, dtype=np.float32)
    norm = float(np.linalg.norm(a)) * float(np.linalg.norm(b))
    return float(np.dot(a, b) / norm) if norm else 0.0


def _mean(rows: np.ndarray, width: int) -> np.ndarray:
    return rows.mean(axis=0) if len(rows) else np.zeros((width,), dtype=np.float32)
