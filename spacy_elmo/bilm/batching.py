"""Grouping sentences of similar length into batches: bounded by padded token slots (the
``elmo`` component, pretraining), or by rows (``embed``'s ``--batch-size``, as AllenNLP's)."""

from typing import List, Sequence

DEFAULT_MAX_PIECE_LENGTH = 256
"""Tokens the biLM reads as one sequence at most, by default: a longer doc (the ``elmo``
component) or line (``embed``) is read in pieces of this size, so memory stays bounded."""


def batches_by_length(lengths: Sequence[int], max_tokens: int, longest_first: bool = True) -> List[List[int]]:
    """Indices sorted by length (stably) and cut so that ``rows × (longest + 2)`` — the padded
    slots the biLM runs, boundaries included — stays within ``max_tokens``; an item too long
    for the budget forms a batch of its own."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=longest_first)
    batches: List[List[int]] = []
    current: List[int] = []
    longest = 0
    for index in order:
        longest_with = max(longest, lengths[index])
        if current and (len(current) + 1) * (longest_with + 2) > max_tokens:
            batches.append(current)
            current, longest_with = [], lengths[index]
        current.append(index)
        longest = longest_with
    if current:
        batches.append(current)
    return batches


def batches_of_rows(lengths: Sequence[int], batch_size: int, by_length: bool = True) -> List[List[int]]:
    """Indices sorted longest first (stably; kept in order when ``by_length`` is false) and cut
    into runs of ``batch_size``."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True) if by_length else list(range(len(lengths)))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
