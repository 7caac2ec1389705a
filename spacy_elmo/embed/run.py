"""``embed_corpus``: a whole corpus into AllenNLP's HDF5 layout, streaming, resumable, shardable.

Lines are read lazily and grouped into chunks of ``chunk_lines`` consecutive lines of the
shard; each chunk is embedded in length-sorted batches and written to its own file in
``OUTPUT.partial/`` as it goes (:mod:`.partial`). Memory holds one chunk's text and one
batch's layers, whatever the corpus size (plus the ``sentence_to_index`` mapping, which the
layout keeps for every line; ``keep_sentences=False`` leaves it out). When every chunk is
done the chunks are copied, in line order, into OUTPUT, which appears in one rename.
Re-running the same command after a kill skips the finished chunks; because every chunk's
batches depend only on its own lines, the result is the file an uninterrupted run writes.
"""

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import h5py
from tqdm import tqdm

from ..bilm.batching import DEFAULT_MAX_PIECE_LENGTH
from ..bilm.model import ElmoBiLM
from ..files import PathLike, atomic_path
from .corpus import CorpusScan, Shard, Tokenizer, decode_line, make_tokenizer, scan_corpus, shard_lines
from .embedder import ChunkEmbedder, model_fingerprint
from .errors import EmbedOutputError, EmbedSettingsError, EmbedWarning
from .layout import OUTPUT_FORMATS, write_line, write_metadata, write_sentence_to_index
from .partial import PartialRun

LAYOUT_VERSION = 1


@dataclass(frozen=True)
class EmbedSettings:
    """Everything besides the biLM that decides what a run writes (recorded, and checked on resume)."""

    output_format: str = "all"
    batch_size: int = 64
    chunk_lines: int = 1024
    max_piece_length: int = DEFAULT_MAX_PIECE_LENGTH
    spacy_lang: Optional[str] = None
    shard: Shard = Shard()
    encoding_errors: str = "strict"
    keep_sentences: bool = True

    def validate(self) -> None:
        if self.output_format not in OUTPUT_FORMATS:
            raise EmbedSettingsError(
                f"output format must be one of {list(OUTPUT_FORMATS)} (--all, --top, --average), got {self.output_format!r}."
            )
        for name in ("batch_size", "chunk_lines", "max_piece_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise EmbedSettingsError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}.")


@dataclass(frozen=True)
class EmbedSummary:
    """What a run did: lines in the input and in this shard, lines embedded now and found done."""

    output: Path
    n_input_lines: int
    n_shard_lines: int
    n_embedded: int
    n_resumed: int
    n_empty: int
    n_split: int
    n_undecodable: int


def embed_corpus(
    input_path: PathLike,
    output_path: PathLike,
    bilm: ElmoBiLM,
    settings: EmbedSettings = EmbedSettings(),
    *,
    force: bool = False,
    progress: bool = True,
) -> EmbedSummary:
    """Embed every line of ``input_path`` that ``settings.shard`` owns into ``output_path``.

    ``bilm`` is used as it is (device, dtype); it is switched to eval mode. An existing
    ``output_path`` is replaced only with ``force`` (and only once the new file is
    complete); ``force`` also discards an unfinished run started with other settings.
    Empty, split and undecodable lines are counted and reported with one
    :class:`EmbedWarning` each.
    """
    settings.validate()
    input_path, output = Path(input_path), Path(output_path)
    check_output(output, force)
    tokenizer_name, tokenize = make_tokenizer(settings.spacy_lang)
    scan = scan_corpus(input_path, settings.shard, settings.encoding_errors)
    bilm.eval()
    manifest = _manifest(settings, tokenizer_name, scan, bilm)
    embedder = ChunkEmbedder(bilm, settings.output_format, settings.batch_size, settings.max_piece_length)
    counts = {"embedded": 0, "resumed": 0, "empty": 0, "split": 0}
    sentence_to_index: Dict[str, str] = {}
    with PartialRun(output) as partial:
        partial.start(manifest, restart=force)
        finished = partial.finished_chunks()
        bar = tqdm(
            total=scan.n_shard_words,
            unit="word",
            unit_scale=True,
            file=sys.stderr,
            disable=not progress,
            desc=output.name,
            dynamic_ncols=True,
        )
        n_chunks = 0
        try:
            for chunk, lines in enumerate(_chunks(input_path, settings, tokenize)):
                n_chunks += 1
                for index, text, tokens in lines:
                    if settings.keep_sentences:
                        sentence_to_index[text] = str(index)
                    counts["empty"] += not tokens
                    counts["split"] += len(tokens) > settings.max_piece_length
                if chunk in finished:
                    counts["resumed"] += len(lines)
                    bar.update(sum(len(text.split()) for _, text, _ in lines))
                    continue
                _write_chunk(partial.chunk_path(chunk), embedder, lines, bar)
                counts["embedded"] += len(lines)
        finally:
            bar.close()
        metadata = {**manifest, "n_layers": bilm.options.n_output_layers, "dim": bilm.options.output_dim}
        _assemble(output, partial, n_chunks, sentence_to_index if settings.keep_sentences else None, metadata)
        partial.remove()
    _report(settings, counts, scan)
    return EmbedSummary(
        output,
        scan.n_lines,
        scan.n_shard_lines,
        counts["embedded"],
        counts["resumed"],
        counts["empty"],
        counts["split"],
        scan.n_undecodable,
    )


def check_output(output: Path, force: bool) -> None:
    """Refuse a directory, a missing parent directory, or an existing OUTPUT without ``force``."""
    if output.is_dir():
        raise EmbedOutputError(f"OUTPUT {output} is a directory; pass the path of the .hdf5 file to write.")
    if output.exists() and not force:
        raise EmbedOutputError(
            f"{output} already exists. Pass --force to replace it (the old file stays until the new one is "
            f"complete), or choose another OUTPUT."
        )
    if not output.parent.is_dir():
        raise EmbedOutputError(f"The directory of OUTPUT ({output.parent}) does not exist; create it first.")


def _manifest(settings: EmbedSettings, tokenizer_name: str, scan: CorpusScan, bilm: ElmoBiLM) -> Dict[str, Any]:
    parameter = next(bilm.parameters())
    return {
        "layout_version": LAYOUT_VERSION,
        "output_format": settings.output_format,
        "batch_size": settings.batch_size,
        "chunk_lines": settings.chunk_lines,
        "max_piece_length": settings.max_piece_length,
        "tokenizer": tokenizer_name,
        "shard": str(settings.shard),
        "encoding_errors": settings.encoding_errors,
        "sentence_to_index": settings.keep_sentences,
        "n_input_lines": scan.n_lines,
        "input_sha256": scan.sha256,
        "model_sha256": model_fingerprint(bilm),
        "precision": bilm.inference_precision,
        "device": parameter.device.type,
        "dtype": str(parameter.dtype).replace("torch.", ""),
    }


Line = Tuple[int, str, List[str]]


def _chunks(input_path: Path, settings: EmbedSettings, tokenize: Tokenizer) -> Iterator[List[Line]]:
    chunk: List[Line] = []
    for index, raw in shard_lines(input_path, settings.shard):
        text = decode_line(raw, input_path, index, settings.encoding_errors)
        chunk.append((index, text, tokenize(text)))
        if len(chunk) == settings.chunk_lines:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_chunk(path: Path, embedder: ChunkEmbedder, lines: List[Line], bar: tqdm) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for position, array in embedder.embed([tokens for _, _, tokens in lines]):
            index, text, _ = lines[position]
            write_line(h5, index, array)
            bar.update(len(text.split()))
        h5.attrs["first_index"] = lines[0][0]
        h5.attrs["n_lines"] = len(lines)


def _assemble(
    output: Path, partial: PartialRun, n_chunks: int, sentence_to_index: Optional[Dict[str, str]], metadata: Dict[str, Any]
) -> None:
    """Copy every chunk, in line order, into OUTPUT (written aside and renamed when complete)."""
    with atomic_path(output) as tmp, h5py.File(tmp, "w") as out:
        for chunk in range(n_chunks):
            with h5py.File(partial.chunk_path(chunk), "r") as h5:
                for key in sorted(h5.keys(), key=int):
                    write_line(out, int(key), h5[key][()])
        if sentence_to_index is not None:
            write_sentence_to_index(out, sentence_to_index)
        write_metadata(out, metadata)


def _report(settings: EmbedSettings, counts: Dict[str, int], scan: CorpusScan) -> None:
    if counts["empty"]:
        warnings.warn(
            EmbedWarning(
                f"{counts['empty']} empty line(s) were stored as arrays with 0 tokens (AllenNLP's elmo command refuses them)."
            ),
            stacklevel=3,
        )
    if counts["split"]:
        warnings.warn(
            EmbedWarning(
                f"{counts['split']} line(s) longer than {settings.max_piece_length} tokens were read in pieces of "
                f"--max-piece-length tokens, each piece with its own sentence context."
            ),
            stacklevel=3,
        )
    if scan.n_undecodable:
        warnings.warn(
            EmbedWarning(f"{scan.n_undecodable} line(s) held bytes that are not UTF-8; they were read as U+FFFD."), stacklevel=3
        )
