"""A persistent, size-bounded store of a frozen biLM's layers per token sequence, on disk.

A frozen biLM gives the same layers for the same tokens in every epoch, run, seed and
downstream config, so training computes them once per (biLM fingerprint, token sequence)
and reads them back afterwards: reading 2×1024 float16 values per token is far cheaper
than running a 93.6M-parameter LSTM over it.

Layout: ``<directory>/v1/<fingerprint[:32]>/<key[:2]>/<key>.layers``, one file per token
sequence (``key`` hashes the fingerprint and the tokens). Each file is a header (magic,
dtype, shape) and the array's bytes, with a blake2b digest over both, so a file cut short
by a killed process, a disk that lost the last write or a flipped bit is detected on
reading; it is then deleted and the layers computed again. Files are written under a
temporary name and renamed into place (not fsync'ed: the digest catches what a crash loses),
so several processes may write the same key at once and readers see a whole file or none.

The store is bounded (``max_bytes``): reading an entry marks it used (its mtime), and when
this process first writes, and again when its writes since its last scan reach an eighth
of the bound (or the bound itself is passed), it scans the directory under an exclusive file lock and deletes the least
recently used entries, of any fingerprint, until the store is at most 90 % of the bound.
Entries of other weights are never read (another fingerprint), so they age out this way.
"""

import hashlib
import json
import os
import struct
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..bilm.fingerprint import weights_fingerprint
from ..bilm.model import ElmoBiLM
from ..bilm.pretrained import default_cache_dir
from ..files import TMP_MARK, temporary_name
from ..locks import PicklableLock

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: scans are not serialized between processes
    fcntl = None  # type: ignore[assignment]

STORE_ENV = "SPACY_ELMO_LAYER_STORE"
FORMAT_DIR = "v1"
SUFFIX = ".layers"
MAGIC = b"ELMOLYR1"
_HEADER = struct.Struct("<8s2sIII")  # magic, dtype code, layers, tokens, width
_DIGEST_BYTES = 16
_DTYPES: Dict[bytes, np.dtype] = {b"f2": np.dtype("<f2"), b"f4": np.dtype("<f4")}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}
_ORPHAN_AGE_S = 3600.0
FLOAT16_RELATIVE_ERROR = 2.0**-11
"""Largest relative error of a float16 entry (round to nearest, 10 stored mantissa bits) for
values of magnitude 2**-14 to 65504; smaller values are off by at most 2**-25 absolute."""


def default_store_dir() -> Path:
    """``$SPACY_ELMO_LAYER_STORE``, else ``layers/`` in the model cache
    (:func:`spacy_elmo.bilm.pretrained.default_cache_dir`: ``~/.cache/spacy_elmo`` by default)."""
    override = os.environ.get(STORE_ENV)
    if override:
        return Path(override).expanduser()
    return default_cache_dir() / "layers"


def bilm_fingerprint(bilm: ElmoBiLM) -> str:
    """A digest of everything the layers depend on: the class, options (ELMoForManyLangs
    models hash their lexicons into them), inference precision and every parameter and buffer."""
    options = bilm.options.to_dict() if hasattr(bilm.options, "to_dict") else repr(bilm.options)
    return weights_fingerprint(bilm, {"class": type(bilm).__name__, "options": options, "precision": bilm.inference_precision})


def sequence_key(fingerprint: str, tokens: Sequence[str]) -> str:
    """The store's name for one token sequence's layers under one biLM."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(fingerprint.encode("ascii"))
    digest.update(json.dumps(list(tokens), ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def encode_entry(layers: np.ndarray) -> bytes:
    """The bytes of one entry: header, array, and a digest over both."""
    dtype = layers.dtype.newbyteorder("<") if layers.dtype.byteorder == ">" else layers.dtype
    if dtype not in _CODES:
        raise ValueError(f"layer store entries are float16 or float32, got {layers.dtype}")
    n_layers, n_tokens, width = layers.shape
    body = _HEADER.pack(MAGIC, _CODES[dtype], n_layers, n_tokens, width) + np.ascontiguousarray(layers, dtype=dtype).tobytes()
    return body + hashlib.blake2b(body, digest_size=_DIGEST_BYTES).digest()


def decode_entry(data: bytes) -> Optional[np.ndarray]:
    """The array of an entry, or None if it is truncated, corrupted or not an entry."""
    if len(data) < _HEADER.size + _DIGEST_BYTES:
        return None
    body, digest = data[:-_DIGEST_BYTES], data[-_DIGEST_BYTES:]
    magic, code, n_layers, n_tokens, width = _HEADER.unpack_from(body)
    dtype = _DTYPES.get(code)
    if magic != MAGIC or dtype is None:
        return None
    if len(body) != _HEADER.size + n_layers * n_tokens * width * dtype.itemsize:
        return None
    if hashlib.blake2b(body, digest_size=_DIGEST_BYTES).digest() != digest:
        return None
    return np.frombuffer(body, dtype=dtype, offset=_HEADER.size).reshape(n_layers, n_tokens, width)


class LayerStore:
    """Layers per (fingerprint, token sequence) in files under ``directory``, at most about
    ``max_bytes`` in all (see the module docs); ``float16`` halves disk use and reads."""

    def __init__(self, directory: Path, max_bytes: int, float16: bool = True) -> None:
        if max_bytes < 0:
            raise ValueError(f"layer store size must be >= 0, got {max_bytes}.")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.dtype = np.dtype("<f2") if float16 else np.dtype("<f4")
        self.hits = 0
        self.writes = 0
        self.corrupt = 0
        """Entries found truncated or corrupted (deleted, then computed again)."""
        self.evicted = 0
        self._written_since_scan = 0
        self._size_at_scan: Optional[int] = None
        self._lock = PicklableLock()

    def __getstate__(self) -> Dict:
        raise TypeError("a LayerStore is a handle on files, not state: copies of a layer reopen it")

    def path(self, fingerprint: str, key: str) -> Path:
        return self.directory / FORMAT_DIR / fingerprint[:32] / key[:2] / f"{key}{SUFFIX}"

    def contains(self, fingerprint: str, key: str) -> bool:
        """Whether an entry exists (not read, so not checked: :meth:`get` checks)."""
        return self.path(fingerprint, key).is_file()

    def get(self, fingerprint: str, key: str, n_tokens: int) -> Optional[np.ndarray]:
        """The stored layers (read-only), or None when absent or found damaged (then deleted)."""
        path = self.path(fingerprint, key)
        try:
            with open(path, "rb") as file:
                data = file.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        layers = decode_entry(data)
        if layers is None or layers.shape[1] != n_tokens:
            with self._lock:
                self.corrupt += 1
            _unlink(path)
            return None
        try:
            os.utime(path)
        except OSError:
            pass
        with self._lock:
            self.hits += 1
        return layers

    def put(self, fingerprint: str, key: str, layers: np.ndarray) -> bool:
        """Store ``layers`` (in the store's dtype) unless they alone exceed the bound; return
        whether an entry was written. A failure to write (disk full, read-only) only skips it."""
        data = encode_entry(np.asarray(layers).astype(self.dtype, copy=False))
        if len(data) > self.max_bytes:
            return False
        path = self.path(fingerprint, key)
        tmp = temporary_name(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as file:
                file.write(data)
            os.replace(tmp, path)
        except OSError:
            _unlink(tmp)
            return False
        with self._lock:
            self.writes += 1
            self._written_since_scan += len(data)
            due = (
                self._size_at_scan is None
                or self._written_since_scan >= max(self.max_bytes // 8, 1)
                or self._size_at_scan + self._written_since_scan > self.max_bytes
            )
        if due:
            self.evict()
        return True

    def entries(self) -> List[Tuple[float, int, Path]]:
        """(mtime, size, path) of every entry; removes temporary files older than an hour
        (left by killed writers)."""
        found = []
        root = self.directory / FORMAT_DIR
        now = time.time()
        for folder, _, names in os.walk(root):
            for name in names:
                path = Path(folder) / name
                try:
                    stat = path.stat()
                except OSError:
                    continue
                if TMP_MARK in name:
                    if now - stat.st_mtime > _ORPHAN_AGE_S:
                        _unlink(path)
                    continue
                if name.endswith(SUFFIX):
                    found.append((stat.st_mtime, stat.st_size, path))
        return found

    def size(self) -> int:
        """Bytes held by entries now."""
        return sum(size for _, size, _ in self.entries())

    def evict(self) -> int:
        """Delete least recently used entries until at most 90 % of the bound is used (at once
        in one process; another process scanning meanwhile is left to it). Returns bytes kept."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.directory / ".lock") as acquired:
            if not acquired:
                with self._lock:
                    self._written_since_scan = 0
                return -1
            entries = sorted(self.entries())
            total = sum(size for _, size, _ in entries)
            target = int(self.max_bytes * 0.9) if total > self.max_bytes else total
            evicted = 0
            for _, size, path in entries:
                if total <= target:
                    break
                _unlink(path)
                total -= size
                evicted += 1
        with self._lock:
            self.evicted += evicted
            self._size_at_scan = total
            self._written_since_scan = 0
        return total

    def clear(self) -> None:
        """Delete every entry (of every biLM)."""
        for _, _, path in self.entries():
            _unlink(path)


class _exclusive:
    """``with _exclusive(path) as acquired``: a non-blocking exclusive lock on a lock file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: Optional[int] = None

    def __enter__(self) -> bool:
        if fcntl is None:
            return True
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            self.fd = None
            return False
        return True

    def __exit__(self, *exc_info: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
