"""Streaming training data: text files → sentences → shuffled, length-grouped batches.

The corpus is never held in memory: sentences flow through a bounded shuffle buffer and a
bounded length-sorting pool. The batch sequence of an epoch is a pure function of
``(seed, epoch)``, so a run resumes exactly by regenerating the epoch and skipping the
batches it already consumed; under data parallelism batch ``i`` goes to rank
``i % world_size``.
"""

import glob
import gzip
import io
import itertools
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, TypeVar, Union

import numpy as np
import torch

from ..bilm.batching import batches_by_length
from ..chars import index_batch
from .config import DataConfig
from .errors import PretrainDataError
from .vocab import LmVocab

if TYPE_CHECKING:
    from spacy.language import Language

Sentence = List[str]
T = TypeVar("T")
Warn = Callable[[str], None]

# Undecodable bytes, as the "surrogateescape" error handler represents them.
ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
# A file is refused once at least this many lines are read and more than half are not UTF-8.
UNDECODABLE_MIN_LINES = 100


def expand_text_paths(spec: Optional[str], setting: str, fix: str) -> List[Path]:
    """The files named by ``spec``: a path, a glob, or a comma-separated list of those.

    Folders a glob matches are skipped. A part that matches no file, or a ``spec`` with no
    parts, is an error naming ``setting`` and suggesting ``fix``, the caller's words for
    where ``spec`` came from and how to change it.
    """
    if not spec:
        return []
    files: List[Path] = []
    parts = [part for part in (p.strip() for p in spec.split(",")) if part]
    if not parts:
        raise PretrainDataError(f"{setting}: {spec!r} names no file. Give a path, a glob or a comma-separated list, or {fix}.")
    for part in parts:
        matches = glob.glob(part) if glob.has_magic(part) else [part]
        files_matched = sorted(path for path in matches if Path(path).is_file())
        if not files_matched:
            raise PretrainDataError(
                f"{setting}: {part!r} matches no file. Fix the path (relative paths start from the working directory) or {fix}."
            )
        files.extend(Path(path) for path in files_matched)
    return files


def read_lines(path: Path, warn: Optional[Warn] = None) -> Iterator[str]:
    """Non-empty, stripped lines of a plain or gzip UTF-8 text file.

    Undecodable bytes become U+FFFD; at the end of the file ``warn`` (default: a Python warning)
    gets the file name and the count of such lines. A file whose lines are mostly not UTF-8
    (binary data, another encoding) is refused with :class:`PretrainDataError`.
    """
    total = undecodable = 0
    try:
        with _open_binary(path) as raw, io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                total += 1
                if not line.isascii() and ESCAPED_BYTE.search(line):
                    undecodable += 1
                    line = line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                    if total >= UNDECODABLE_MIN_LINES and 2 * undecodable > total:
                        raise PretrainDataError(_undecodable_message(path, undecodable, total, refused=True))
                yield line
    except (OSError, EOFError) as err:
        raise PretrainDataError(f"Cannot read {path}: {err}. Check that the file is complete (gzip) and readable.") from None
    if undecodable and 2 * undecodable > total:
        raise PretrainDataError(_undecodable_message(path, undecodable, total, refused=True))
    if undecodable:
        (warn or _python_warning)(_undecodable_message(path, undecodable, total, refused=False))


def _open_binary(path: Path) -> Union[gzip.GzipFile, io.BufferedReader]:
    """``path`` opened for reading bytes, gunzipped on the fly when it ends in .gz."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _undecodable_message(path: Path, undecodable: int, total: int, refused: bool) -> str:
    fix = f"Convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8.txt)"
    if refused:
        return (
            f"{path}: {undecodable:,} of the first {total:,} lines are not UTF-8 text (a binary file, or another "
            f"encoding such as latin-1). {fix}, or remove it from [paths] train/dev/test."
        )
    return f"warning: {path}: {undecodable:,} of {total:,} lines are not valid UTF-8; their undecodable bytes are read as U+FFFD. {fix} to train on the intended text."


def _python_warning(message: str) -> None:
    warnings.warn(message, UnicodeWarning, stacklevel=3)


class SentenceReader:
    """Turns lines into tokenised sentences per [data]: format, tokenizer and length limits."""

    def __init__(self, config: DataConfig, warn: Optional[Warn] = None) -> None:
        self.config = config
        self.warn = warn
        self._warned: Set[str] = set()
        self._nlp: Optional[Language] = None

    def sentences(self, files: Sequence[Path]) -> Iterator[Sentence]:
        """Every sentence of ``files`` in order, after the length filter and the cut into pieces."""
        lines = itertools.chain.from_iterable(read_lines(path, self._warn_once) for path in files)
        raw = self._split_paragraphs(lines) if self.config.format == "paragraphs" else (line.split() for line in lines)
        for tokens in raw:
            yield from self._pieces(tokens)

    def _warn_once(self, message: str) -> None:
        """Each epoch reads the files again: report a file's undecodable lines the first time only."""
        if message in self._warned:
            return
        self._warned.add(message)
        (self.warn or _python_warning)(message)

    def _split_paragraphs(self, lines: Iterable[str]) -> Iterator[Sentence]:
        nlp = self._pipeline()
        for doc in nlp.pipe(lines, batch_size=self.config.pipe_batch_size):
            for sent in doc.sents:
                tokens = [piece for token in sent if not token.is_space for piece in token.text.split()]
                if tokens:
                    yield tokens

    def _pipeline(self) -> "Language":
        if self._nlp is None:
            import spacy

            try:
                nlp = spacy.blank(self.config.lang)
            except Exception as err:
                raise PretrainDataError(
                    f"[data] lang = {self.config.lang!r} is not a spaCy language code ({err}). Use e.g. 'en'."
                ) from None
            nlp.add_pipe("sentencizer")
            nlp.max_length = 10**8
            self._nlp = nlp
        return self._nlp

    def _pieces(self, tokens: Sentence) -> Iterator[Sentence]:
        config = self.config
        if len(tokens) < config.min_tokens or (config.max_tokens is not None and len(tokens) > config.max_tokens):
            return
        step = config.max_sentence_length
        for start in range(0, len(tokens), step):
            piece = tokens[start : start + step]
            if len(piece) >= config.min_tokens:
                yield piece


def shuffled(items: Iterable[T], buffer_size: int, rng: random.Random) -> Iterator[T]:
    """Items in a pseudo-random order, holding at most ``buffer_size`` of them at once."""
    buffer: List[T] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        index = rng.randrange(buffer_size)
        yield buffer[index]
        buffer[index] = item
    rng.shuffle(buffer)
    yield from buffer


def length_batches(
    sentences: Iterable[Sentence], batch_tokens: int, sort_pool: int, rng: random.Random
) -> Iterator[List[Sentence]]:
    """Batches of similar-length sentences with ``rows × (longest + 2) <= batch_tokens``.

    Sentences are sorted by length within pools of ``sort_pool``; the batches of a pool come out
    in random order. A sentence too long for ``batch_tokens`` forms a batch of its own.
    """
    pool: List[Sentence] = []
    for sentence in sentences:
        pool.append(sentence)
        if len(pool) >= sort_pool:
            yield from _cut_pool(pool, batch_tokens, rng)
            pool = []
    if pool:
        yield from _cut_pool(pool, batch_tokens, rng)


def _cut_pool(pool: List[Sentence], batch_tokens: int, rng: random.Random) -> List[List[Sentence]]:
    batches = group_by_length(pool, batch_tokens)
    rng.shuffle(batches)
    return batches


def group_by_length(sentences: Sequence[Sentence], batch_tokens: int) -> List[List[Sentence]]:
    """Sentences sorted by length (stable) and cut into batches of ``rows × (longest + 2) <= batch_tokens``."""
    groups = batches_by_length([len(sentence) for sentence in sentences], batch_tokens, longest_first=False)
    return [[sentences[i] for i in group] for group in groups]


class BatchStream:
    """The training batches, epoch after epoch; deterministic in ``(seed, epoch)``."""

    def __init__(self, files: Sequence[Path], reader: SentenceReader, batch_tokens: int, seed: int) -> None:
        self.files = list(files)
        self.reader = reader
        self.batch_tokens = batch_tokens
        self.seed = seed

    def epoch_batches(self, epoch: int) -> Iterator[List[Sentence]]:
        """All batches of one epoch: files and sentences shuffled, then grouped by length."""
        rng = random.Random(f"spacy-elmo-pretrain:{self.seed}:{epoch}")
        files = list(self.files)
        rng.shuffle(files)
        config = self.reader.config
        stream = shuffled(self.reader.sentences(files), config.shuffle_buffer, rng)
        return length_batches(stream, self.batch_tokens, config.sort_pool, rng)

    def iterate(self, epoch: int, position: int, rank: int = 0, world_size: int = 1) -> Iterator[Tuple[int, int, List[Sentence]]]:
        """``(epoch, position after the step, this rank's batch)`` forever, from a saved position.

        Each step consumes ``world_size`` consecutive batches, one per rank; a trailing group
        smaller than that is skipped so every rank takes the same number of steps.
        """
        while True:
            batches = self.epoch_batches(epoch)
            for _ in itertools.islice(batches, position):
                pass
            produced = False
            while True:
                group = list(itertools.islice(batches, world_size))
                if len(group) < world_size:
                    break
                produced = True
                position += world_size
                yield epoch, position, group[rank]
            if not produced and position == 0:
                raise PretrainDataError(
                    f"The training files ({', '.join(map(str, self.files[:3]))}{', ...' if len(self.files) > 3 else ''}) "
                    f"yield fewer than {world_size} batch(es) of sentences. Check [data] format and "
                    f"min_tokens/max_tokens, or use more text."
                )
            epoch, position = epoch + 1, 0


@dataclass
class LmBatch:
    """One batch as the biLM and the objective take it."""

    char_ids: torch.Tensor
    token_index: torch.Tensor
    lengths: torch.Tensor
    word_ids: torch.Tensor
    """``(B, T + 2)``: ``<S>``, the sentence's word ids, ``</S>``, then -1 padding."""
    n_words: int
    n_oov: int

    def to(self, device: torch.device) -> "LmBatch":
        return LmBatch(
            self.char_ids.to(device),
            self.token_index.to(device),
            self.lengths.to(device),
            self.word_ids.to(device),
            self.n_words,
            self.n_oov,
        )


def make_batch(sentences: Sequence[Sentence], vocab: LmVocab, max_chars: int) -> LmBatch:
    """Character ids for the biLM plus word-id targets with boundaries."""
    char_ids, token_index, lengths, _ = index_batch(sentences, max_chars)
    longest = int(lengths.max()) if len(lengths) else 0
    word_ids = np.full((len(sentences), longest + 2), -1, dtype=np.int64)
    n_oov = 0
    for row, sentence in enumerate(sentences):
        ids = vocab.ids(sentence)
        n_oov += ids.count(vocab.unk_id)
        word_ids[row, 0] = vocab.bos_id
        word_ids[row, 1 : len(ids) + 1] = ids
        word_ids[row, len(ids) + 1] = vocab.eos_id
    return LmBatch(
        torch.from_numpy(char_ids),
        torch.from_numpy(token_index),
        torch.from_numpy(lengths),
        torch.from_numpy(word_ids),
        int(lengths.sum()),
        n_oov,
    )


def read_eval_sentences(files: Sequence[Path], reader: SentenceReader, max_sentences: Optional[int]) -> List[Sentence]:
    """Held-out sentences in file order (small by nature, so kept in memory)."""
    return list(itertools.islice(reader.sentences(files), max_sentences))
