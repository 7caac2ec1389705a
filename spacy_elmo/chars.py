"""Tokens to the character ids the ELMo biLM reads (docs/design.md §1).

Every token becomes ``max_chars`` ids: begin-of-word, its UTF-8 bytes (cut to
``max_chars - 2``), end-of-word, then the padding character; all ids are shifted by +1
so that 0 can mean "no token in this slot". ``<S>`` and ``</S>`` are the sentence
boundary tokens, never spelled out.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np

BOS_CHAR = 256
EOS_CHAR = 257
BOW_CHAR = 258
EOW_CHAR = 259
PAD_CHAR = 260
ID_OFFSET = 1

BOS_TOKEN = "<S>"
EOS_TOKEN = "</S>"
DEFAULT_MAX_CHARS = 50

PADDING_ID = PAD_CHAR + ID_OFFSET


def token_key(token: str, max_chars: int = DEFAULT_MAX_CHARS) -> bytes:
    """What the biLM actually sees of a token: two tokens with equal keys get equal ids."""
    if token == BOS_TOKEN:
        return b"\xffBOS"  # 0xff never occurs in UTF-8, so no real token collides
    if token == EOS_TOKEN:
        return b"\xffEOS"
    return token.encode("utf-8", errors="ignore")[: max_chars - 2]


def encode_tokens(tokens: Sequence[str], max_chars: int = DEFAULT_MAX_CHARS) -> np.ndarray:
    """Character ids of several tokens, shape ``(len(tokens), max_chars)``, int64."""
    return _encode_keys([token_key(token, max_chars) for token in tokens], max_chars)


_BOUNDARY_CHARS = {token_key(BOS_TOKEN): BOS_CHAR, token_key(EOS_TOKEN): EOS_CHAR}


def _encode_keys(keys: Sequence[bytes], max_chars: int) -> np.ndarray:
    """Character ids of tokens given by their :func:`token_key`, all rows at once.

    The keys' bytes are joined into one array and scattered into their rows, so the cost per
    token is a few numpy operations over the batch rather than a Python loop per token.
    """
    n = len(keys)
    ids = np.full((n, max_chars), PADDING_ID, dtype=np.int64)
    ids[:, 0] = BOW_CHAR + ID_OFFSET
    if n == 0:
        return ids
    boundaries = [(row, _BOUNDARY_CHARS[key]) for row, key in enumerate(keys) if key in _BOUNDARY_CHARS]
    spelled = [b"" if key in _BOUNDARY_CHARS else key for key in keys] if boundaries else keys
    lengths = np.fromiter(map(len, spelled), dtype=np.int64, count=n)
    chars = np.frombuffer(b"".join(spelled), dtype=np.uint8).astype(np.int64) + ID_OFFSET
    rows = np.repeat(np.arange(n), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    ids[rows, np.arange(len(chars)) - starts + 1] = chars
    ids[np.arange(n), lengths + 1] = EOW_CHAR + ID_OFFSET
    for row, char in boundaries:
        ids[row, 1] = char + ID_OFFSET
        ids[row, 2] = EOW_CHAR + ID_OFFSET
    return ids


def batch_to_ids(sentences: Sequence[Sequence[str]], max_chars: int = DEFAULT_MAX_CHARS) -> np.ndarray:
    """AllenNLP-style ``(B, T, max_chars)`` ids without boundaries; padded slots are all 0."""
    longest = max((len(s) for s in sentences), default=0)
    ids = np.zeros((len(sentences), longest, max_chars), dtype=np.int64)
    for row, sentence in enumerate(sentences):
        if len(sentence):
            ids[row, : len(sentence)] = encode_tokens(list(sentence), max_chars)
    return ids


def index_batch(
    sentences: Sequence[Sequence[str]], max_chars: int = DEFAULT_MAX_CHARS
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, List[bytes]]:
    """A batch as its distinct tokens plus an index: what the biLM's forward pass takes.

    Returns ``char_ids`` ``(U, max_chars)`` of the U distinct tokens (by :func:`token_key`),
    ``token_index`` ``(B, T)`` pointing into them (0 at padded slots, masked by length),
    ``lengths`` ``(B,)`` and the U keys (for caches).
    """
    position: Dict[bytes, int] = {}
    by_spelling: Dict[str, int] = {}
    keys: List[bytes] = []
    longest = max((len(s) for s in sentences), default=0)
    token_index = np.zeros((len(sentences), longest), dtype=np.int64)
    for row, sentence in enumerate(sentences):
        found_in_row = []
        for token in sentence:
            found = by_spelling.get(token)
            if found is None:
                key = token_key(token, max_chars)
                found = position.get(key)
                if found is None:
                    found = position[key] = len(keys)
                    keys.append(key)
                by_spelling[token] = found
            found_in_row.append(found)
        token_index[row, : len(found_in_row)] = found_in_row
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    return _encode_keys(keys, max_chars), token_index, lengths, keys
