"""Reading a corpus of one sentence per line: shards, decoding, tokenisation, fingerprint.

Lines are read as bytes (``.gz`` files are decompressed) and split on ``\\n`` only, so the
line index of every sentence is the same for every reader. Each line is decoded as UTF-8
(a byte order mark at the start of the file is dropped) and stripped; its tokens are its
whitespace-separated words, or spaCy's tokens without whitespace tokens.
"""

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, List, Optional, Tuple

from .errors import EmbedInputError, EmbedSettingsError

ENCODING_ERRORS = ("strict", "replace")
Tokenizer = Callable[[str], List[str]]


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: the lines whose 0-based index ``i`` has ``i % count == index``."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"I/N"`` with ``0 <= I < N``."""
        parts = text.split("/")
        try:
            index, count = (int(part) for part in parts)
        except ValueError:
            raise EmbedSettingsError(
                f"--shard {text!r}: expected I/N, two integers such as 0/4 (this process takes lines i with i % N == I)."
            ) from None
        return cls.checked(index, count)

    @classmethod
    def checked(cls, index: int, count: int) -> "Shard":
        if count < 1 or not 0 <= index < count:
            raise EmbedSettingsError(f"--shard {index}/{count}: need N >= 1 and 0 <= I < N (shards are numbered from 0).")
        return cls(index, count)

    def owns(self, line_index: int) -> bool:
        return line_index % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class CorpusScan:
    """What one pass over the whole input found (before anything is embedded)."""

    n_lines: int
    n_shard_lines: int
    n_shard_words: int
    sha256: str
    n_undecodable: int


def check_input(path: Path) -> None:
    if not path.exists():
        raise EmbedInputError(f"Input file not found: {path}. Pass a text file with one sentence per line.")
    if not path.is_file():
        raise EmbedInputError(f"Input {path} is not a file. Pass a text file with one sentence per line.")


def open_binary(path: Path) -> BinaryIO:
    """The file's bytes, decompressed if its name ends with ``.gz``."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # type: ignore[return-value]


def raw_lines(path: Path) -> Iterator[bytes]:
    """Every line with its ``\\n`` (the last one may lack it), in order."""
    try:
        with open_binary(path) as handle:
            yield from handle
    except (OSError, EOFError) as err:
        raise EmbedInputError(f"Cannot read {path}: {err}.") from None


def decode_line(raw: bytes, path: Path, index: int, errors: str) -> str:
    """The stripped text of line ``index`` (0-based); strict decoding names the line and byte on failure."""
    if index == 0 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8", errors=errors).strip()
    except UnicodeDecodeError as err:
        raise EmbedInputError(
            f"{path}, line {index + 1} (index {index}): byte {err.start + 1} of the line is not valid UTF-8 "
            f"({err.reason}). Fix or remove that line, or pass --encoding-errors replace to read such bytes as U+FFFD."
        ) from None


def is_decodable(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def scan_corpus(path: Path, shard: Shard, encoding_errors: str) -> CorpusScan:
    """Count lines, fingerprint the content, count this shard's lines and words and (strict
    mode) stop at its first undecodable line, all before any output is written."""
    if encoding_errors not in ENCODING_ERRORS:
        raise EmbedSettingsError(f"--encoding-errors must be one of {list(ENCODING_ERRORS)}, got {encoding_errors!r}.")
    check_input(path)
    digest = hashlib.sha256()
    n_lines = n_shard_lines = n_words = n_undecodable = 0
    for index, raw in enumerate(raw_lines(path)):
        digest.update(raw)
        n_lines += 1
        if not shard.owns(index):
            continue
        n_shard_lines += 1
        if not is_decodable(raw):
            if encoding_errors == "strict":
                decode_line(raw, path, index, "strict")
            n_undecodable += 1
        n_words += len(decode_line(raw, path, index, "replace").split())
    return CorpusScan(n_lines, n_shard_lines, n_words, digest.hexdigest(), n_undecodable)


def shard_lines(path: Path, shard: Shard) -> Iterator[Tuple[int, bytes]]:
    """``(line index, raw bytes)`` of the lines this shard owns."""
    for index, raw in enumerate(raw_lines(path)):
        if shard.owns(index):
            yield index, raw


def whitespace_tokenizer(text: str) -> List[str]:
    return text.split()


def make_tokenizer(spacy_lang: Optional[str]) -> Tuple[str, Tokenizer]:
    """``(name, tokenize)``: whitespace splitting, or the tokenizer of ``spacy.blank(lang)``."""
    if not spacy_lang:
        return "whitespace", whitespace_tokenizer
    import spacy

    try:
        tokenizer = spacy.blank(spacy_lang).tokenizer
    except (ImportError, KeyError, ValueError) as err:
        raise EmbedSettingsError(
            f"--spacy-tokenizer {spacy_lang!r}: spaCy has no language with that code ({str(err).splitlines()[0][:200]}). "
            f"Pass a code such as en, de or xx."
        ) from None

    def tokenize(text: str) -> List[str]:
        return [token.text for token in tokenizer(text) if not token.is_space]

    return f"spacy:{spacy_lang}", tokenize
