"""``merge_shards``: the files of ``embed --shard I/N`` for I = 0..N-1 → one file in the full layout.

Shards must come from one run (same input, biLM, output format, tokenizer, piece length,
decoding), be complete (shard I holds exactly the lines i < n with i % N == I), and
together be shards 0..N-1 once each, so that they are disjoint and cover every line. The
values equal a single-process run's up to float rounding (the batches hold other lines).
"""

from contextlib import ExitStack
from pathlib import Path
from typing import Any, Dict, List, Sequence

import h5py

from ..files import PathLike, atomic_path
from .corpus import Shard
from .errors import EmbedMergeError, EmbedOutputError
from .layout import (
    METADATA_ATTR,
    line_keys,
    read_metadata,
    read_sentence_to_index,
    write_line,
    write_metadata,
    write_sentence_to_index,
)
from .partial import partial_dir

# Settings that change what a line's array means; batch sizes only change float rounding.
MUST_AGREE = (
    "layout_version",
    "output_format",
    "tokenizer",
    "max_piece_length",
    "encoding_errors",
    "sentence_to_index",
    "n_input_lines",
    "input_sha256",
    "model_sha256",
    "precision",
    "dtype",
    "n_layers",
    "dim",
)


def merge_shards(output_path: PathLike, shard_paths: Sequence[PathLike], *, force: bool = False) -> Path:
    """Write ``output_path`` from complete, disjoint shard files that cover the input; returns it."""
    output = Path(output_path)
    paths = [Path(p) for p in shard_paths]
    if not paths:
        raise EmbedMergeError("No shard files given: pass the files written by `embed --shard I/N` for every I.")
    if output.exists() and not force:
        raise EmbedOutputError(f"{output} already exists. Pass --force to replace it, or choose another OUT.")
    if output.resolve() in {p.resolve() for p in paths if p.exists()}:
        raise EmbedMergeError(f"OUT {output} is also one of the shard files; write the merged file elsewhere.")
    with ExitStack() as stack:
        files = [stack.enter_context(_open_shard(path)) for path in paths]
        metadata = [_metadata(path, h5) for path, h5 in zip(paths, files)]
        by_shard = _check_shards(paths, metadata)
        count = by_shard[0][1]["shard"].count
        n_lines = metadata[0]["n_input_lines"]
        for path, meta in by_shard.values():
            _check_complete(path, files[paths.index(path)], meta["shard"], n_lines)
        handles = {shard_index: files[paths.index(path)] for shard_index, (path, _) in by_shard.items()}
        with atomic_path(output) as tmp, h5py.File(tmp, "w") as out:
            for index in range(n_lines):
                write_line(out, index, handles[index % count][str(index)][()])
            if metadata[0]["sentence_to_index"]:
                write_sentence_to_index(out, _merged_sentence_to_index(paths, files))
            merged = {key: metadata[0][key] for key in MUST_AGREE}
            merged["shard"] = "0/1"
            merged["merged_shards"] = count
            write_metadata(out, merged)
    return output


def _open_shard(path: Path) -> h5py.File:
    if not path.is_file():
        unfinished = partial_dir(path)
        if unfinished.is_dir():
            raise EmbedMergeError(
                f"Shard {path} is not finished ({unfinished} holds its unfinished run): re-run its "
                f"`embed ... --shard I/N` command to complete it, then merge."
            )
        raise EmbedMergeError(f"Shard file not found: {path}.")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise EmbedMergeError(f"Cannot read shard {path} as HDF5: {err}.") from None


def _metadata(path: Path, h5: h5py.File) -> Dict[str, Any]:
    meta = read_metadata(h5)
    if meta is None or "shard" not in meta:
        raise EmbedMergeError(
            f"{path} was not written by spacy-elmo's embed command (no '{METADATA_ATTR}' attribute): merge "
            f"takes the files of `python -m spacy_elmo embed ... --shard I/N`."
        )
    index, count = (int(part) for part in meta["shard"].split("/"))
    return {**meta, "shard": Shard(index, count)}


def _check_shards(paths: List[Path], metadata: List[Dict[str, Any]]) -> Dict[int, Any]:
    first_path, first = paths[0], metadata[0]
    for path, meta in zip(paths[1:], metadata[1:]):
        for key in MUST_AGREE + ("shard_count",):
            ours = meta["shard"].count if key == "shard_count" else meta.get(key)
            theirs = first["shard"].count if key == "shard_count" else first.get(key)
            if ours != theirs:
                raise EmbedMergeError(
                    f"{path} and {first_path} are not shards of one run: their {key} differs ({ours!r} vs "
                    f"{theirs!r}). Merge the shards of one `embed` command line run with --shard 0/N ... N-1/N."
                )
    count = first["shard"].count
    by_shard: Dict[int, Any] = {}
    for path, meta in zip(paths, metadata):
        index = meta["shard"].index
        if index in by_shard:
            raise EmbedMergeError(f"Shard {index}/{count} is given twice: {by_shard[index][0]} and {path}.")
        by_shard[index] = (path, meta)
    missing = [f"{i}/{count}" for i in range(count) if i not in by_shard]
    if missing:
        raise EmbedMergeError(
            f"Shard(s) {', '.join(missing)} missing: {len(paths)} of {count} shard files given. Run `embed ... "
            f"--shard I/{count}` for each and pass every file."
        )
    return by_shard


def _check_complete(path: Path, h5: h5py.File, shard: Shard, n_lines: int) -> None:
    expected = set(range(shard.index, n_lines, shard.count))
    present = {int(key) for key in line_keys(h5)}
    if present != expected:
        missing, extra = sorted(expected - present), sorted(present - expected)
        raise EmbedMergeError(
            f"Shard {path} ({shard}) does not hold exactly its lines i < {n_lines} with i % {shard.count} == "
            f"{shard.index}: {len(missing)} missing (e.g. {missing[:5]}), {len(extra)} not its own (e.g. "
            f"{extra[:5]}). Re-run that shard with --force."
        )


def _merged_sentence_to_index(paths: List[Path], files: List[h5py.File]) -> Dict[str, str]:
    """Each sentence → its last line index over all shards, as a single run maps it."""
    merged: Dict[str, str] = {}
    for path, h5 in zip(paths, files):
        mapping = read_sentence_to_index(h5)
        if mapping is None:
            raise EmbedMergeError(f"Shard {path} has no sentence_to_index dataset although its settings say it should.")
        for sentence, index in mapping.items():
            if sentence not in merged or int(index) > int(merged[sentence]):
                merged[sentence] = index
    return merged
