"""Download a published ELMoForManyLangs model (``manylangs:CODE``) into the model cache.

The archive is streamed into a temporary file, checked (its SHA-256 where one is published, a
readable zip whose members pass their CRC checks, no absolute or ``..`` paths, no links, no two
members on one file, a model's size), unpacked into a temporary folder beside its final place,
loaded once as a model, and only then renamed into place: ``<cache>/manylangs/<CODE>``. A killed
download leaves at most a hidden partial archive ``.CODE.zip.tmp-*`` and a hidden folder
``.CODE.tmp-*``, which never load as a model; the next download of that model removes those
older than a day (younger ones may belong to a download still running in another process).
The folder's manifest (``spacy_elmo_manifest.json``) records the archive's URL and SHA-256 and
each unpacked file's size, modification time and SHA-256. Before a cached model is used, each
file's size and time are compared with it, and a file whose size or time differs is hashed, so
a file that was later truncated or changed is reported rather than loaded. Hashing every file
on every use would cost half a second or more for a published model; the price is that a change
that keeps both the size and the time is not seen on use. ``python -m spacy_elmo download
manylangs:CODE`` hashes every file (``verify=True``)."""

import hashlib
import json
import os
import shutil
import stat
import time
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional, Tuple

from ..errors import ElmoDownloadError, ElmoError, ElmoModelNotFoundError
from ..files import TMP_MARK, PathLike, fsync_path, remove_orphans, temporary_name, write_text_atomic
from . import manylangs_io
from .manylangs_models import MIRROR_ENV, MODELS, PREFIX, ManyLangsModel, archive_url, base_url, names
from .pretrained import (
    _CHUNK_BYTES,
    _NETWORK_ERRORS,
    _TIMEOUT_S,
    CACHE_ENV,
    _remove_if_empty,
    _stream,
    default_cache_dir,
    make_cache_directory,
    network_reason,
)

CACHE_FOLDER = "manylangs"
"""The cache's subfolder for these models, one folder per language code."""
MANIFEST_FILE = "spacy_elmo_manifest.json"

_MAX_UNPACKED_BYTES = 8 << 30
"""An archive that would unpack to more than this is refused (a published one unpacks to about 0.7 GB)."""
_MAX_MEMBERS = 100
"""An archive with more members than this is refused (a published one holds a folder and about six files)."""
_STALE_AFTER_S = 24 * 3600
"""A download's temporary file or folder older than this was left by a killed process and is removed."""


def model_for(name: str) -> ManyLangsModel:
    """The published model ``manylangs:CODE`` names (case-insensitive); unknown codes list the known ones."""
    code = name[len(PREFIX) :].lower() if name.lower().startswith(PREFIX) else name.lower()
    model = MODELS.get(code)
    if model is None:
        raise ElmoModelNotFoundError(
            f"Unknown ELMoForManyLangs model {name!r}. Published languages: {', '.join(names())}. "
            f"To use another model, pass its unpacked directory."
        )
    return model


def download_manylangs(name: str, cache_dir: Optional[PathLike] = None, progress: bool = True, verify: bool = False) -> Path:
    """Download and unpack ``manylangs:CODE`` (if not cached yet); return its checked model directory.

    The directory is what ``ElmoBiLM.from_pretrained`` and the component's ``weights`` accept.
    ``verify`` hashes every cached file rather than only those whose size or time changed.
    """
    model = model_for(name)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = root / CACHE_FOLDER
    target = folder / model.code
    if target.exists():
        check_cached(target, model, full=verify)
        return target
    created_folder = make_cache_directory(folder)
    url = archive_url(model)
    archive = temporary_name(folder / f"{model.code}.zip")
    unpacked = temporary_name(target)
    try:
        _remove_stale_temporaries(folder, (archive, unpacked))
        _fetch(url, archive, model, target, progress)
        digest = sha256_of(archive)
        if model.sha256 is not None and digest != model.sha256.lower():
            raise ElmoDownloadError(
                f"{url} has SHA-256 {digest}, but the published one is {model.sha256}: the download is corrupted or "
                f"the file was replaced. Nothing was kept in {folder}; run again to retry, or {_by_hand(model, url)}"
            )
        model_dir = _unpack(archive, unpacked, url)
        try:
            from .manylangs import ManyLangsBiLM

            ManyLangsBiLM.from_directory(model_dir, token_cache_size=0)
        except ElmoError as err:
            raise ElmoDownloadError(
                f"The archive {url} does not hold a loadable model: {err} Nothing was kept in {folder}; "
                f"check the download location ({_location()}) or {_by_hand(model, url)}"
            ) from err
        _write_manifest(model_dir, url, digest)
        fsync_path(model_dir)
        try:
            os.rename(model_dir, target)
        except OSError:
            if not target.exists():
                raise
            check_cached(target, model)  # another process put the same model in place meanwhile
        fsync_path(folder)
    except OSError as err:
        if isinstance(err, ElmoDownloadError):
            raise
        raise ElmoDownloadError(
            f"Cannot write the model into {folder} while downloading and unpacking {url} ({err}). Free disk space or set "
            f"{CACHE_ENV} to a writable directory with room for the model (about 0.7 GB unpacked)."
        ) from None
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(unpacked, ignore_errors=True)
        if created_folder and not target.exists():
            _remove_if_empty(folder)
    return target


def check_cached(directory: Path, model: ManyLangsModel, full: bool = False) -> None:
    """Raise unless every file the manifest of ``directory`` lists is there with its size and SHA-256.

    A file whose size and modification time are the recorded ones is taken as unchanged without
    being read (see the module's docstring); ``full`` hashes every file. A file whose time changed
    but whose bytes did not has its new time recorded, so that the next use does not hash it again.
    """
    manifest_path = directory / MANIFEST_FILE
    fix = f"Delete {directory} and run `python -m spacy_elmo download {PREFIX}{model.code}` again."
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files: Dict[str, Dict[str, Any]] = manifest["files"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise ElmoDownloadError(
            f"The cached model {directory} has no readable {MANIFEST_FILE} ({type(err).__name__}: {err}): it was not "
            f"written by a complete download. {fix}"
        ) from None
    retimed = False
    for relative, expected in files.items():
        path = directory / relative
        if not path.is_file():
            raise ElmoDownloadError(f"The cached model {directory} lacks {relative}, which its {MANIFEST_FILE} lists. {fix}")
        found = path.stat()
        same_time = found.st_mtime_ns == expected.get("mtime_ns")
        if found.st_size == expected.get("bytes") and same_time and not full:
            continue
        if found.st_size != expected.get("bytes") or sha256_of(path) != expected.get("sha256"):
            raise ElmoDownloadError(
                f"The cached file {path} ({found.st_size} bytes) differs from the one downloaded ({expected.get('bytes')} "
                f"bytes, SHA-256 {expected.get('sha256')}): it was truncated or changed since. {fix}"
            )
        if not same_time:
            expected["mtime_ns"] = found.st_mtime_ns
            retimed = True
    if retimed:
        try:
            write_text_atomic(manifest_path, _manifest_text(manifest))
        except OSError:
            pass  # a read-only cache: the touched files are hashed again on the next use


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _remove_stale_temporaries(folder: Path, ours: Tuple[Path, ...]) -> None:
    """Delete the temporaries named like ``ours`` (another download of this model) that are older than
    :data:`_STALE_AFTER_S`: a killed download's partial archive and unpacked folder."""
    prefixes = tuple(path.name[: path.name.index(TMP_MARK) + len(TMP_MARK)] for path in ours)
    now = time.time()

    def keep(path: Path) -> bool:
        try:
            return not path.name.startswith(prefixes) or now - path.stat().st_mtime < _STALE_AFTER_S
        except OSError:
            return True

    remove_orphans(folder, keep)


def _fetch(url: str, archive: Path, model: ManyLangsModel, target: Path, progress: bool) -> None:
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            _stream(response, archive, url, f"{PREFIX}{model.code} {model.nlpl_id}.zip", progress)
    except ElmoDownloadError:
        raise
    except _NETWORK_ERRORS as err:
        raise ElmoDownloadError(
            f"Could not download {url} ({network_reason(err)}) into {target}. Check your network connection and the download "
            f"location ({_location()}), or {_by_hand(model, url)}"
        ) from None


def _unpack(archive: Path, unpacked: Path, url: str) -> Path:
    """Unpack ``archive`` into the new folder ``unpacked``; return the folder that holds ``config.json``."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            _check_members(members, url)
            broken = zipped.testzip()
            if broken is not None:
                raise ElmoDownloadError(
                    f"{url}: the member {broken!r} fails its CRC check: the download is corrupted. Nothing was kept; "
                    f"run again to retry."
                )
            unpacked.mkdir()
            for member in members:
                try:
                    _unpack_member(zipped, member, unpacked)
                except (FileExistsError, NotADirectoryError, IsADirectoryError) as err:
                    raise ElmoDownloadError(
                        f"{url}: the archive member {member.filename!r} cannot be unpacked where it belongs ({err.strerror}): "
                        f"another member already holds that file or folder. The archive is unsafe and was not "
                        f"unpacked; nothing was kept. Check the download location ({_location()})."
                    ) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as err:
        raise ElmoDownloadError(
            f"{url} is not a readable zip archive ({err}): the download is truncated or corrupted, or the server "
            f"sent something else. Nothing was kept; run again to retry, and check the download location ({_location()})."
        ) from None
    return _model_root(unpacked, url)


def _unpack_member(zipped: zipfile.ZipFile, member: zipfile.ZipInfo, unpacked: Path) -> None:
    """Write one checked member below ``unpacked``; a file is created only where none exists."""
    path = unpacked.joinpath(*_member_parts(member.filename))
    if member.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipped.open(member) as source, open(path, "xb") as out:
        shutil.copyfileobj(source, out, _CHUNK_BYTES)
        out.flush()
        os.fsync(out.fileno())


def _member_parts(name: str) -> Tuple[str, ...]:
    """The folders and file name a member unpacks to: ``\\`` read as ``/``, empty and ``.`` parts dropped."""
    return tuple(part for part in PurePosixPath(name.replace("\\", "/")).parts if part not in ("", ".", "/"))


def _check_members(members: List[zipfile.ZipInfo], url: str) -> None:
    """Refuse members that would land outside the folder or on the same file as another (names compared
    without case, as some disks compare them), links, and archives too large to be a model."""
    refused = f"The archive is unsafe and was not unpacked; nothing was kept. Check the download location ({_location()})."
    if len(members) > _MAX_MEMBERS:
        raise ElmoDownloadError(
            f"{url}: the archive holds {len(members)} members, more than any model ({_MAX_MEMBERS} at most; a "
            f"published one holds about six files). It was not unpacked; nothing was kept. Check the download "
            f"location ({_location()})."
        )
    total = 0
    files: Dict[Tuple[str, ...], str] = {}
    folders: Dict[Tuple[str, ...], str] = {}
    for member in members:
        name = member.filename
        parts = _member_parts(name)
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
            raise ElmoDownloadError(
                f"{url}: the archive member {name!r} would be written outside the model folder (an absolute path or "
                f"'..'). {refused}"
            )
        if stat.S_ISLNK(member.external_attr >> 16):
            raise ElmoDownloadError(
                f"{url}: the archive member {name!r} is a symbolic link; a model archive holds plain files only. "
                f"The archive was not unpacked; nothing was kept. Check the download location ({_location()})."
            )
        key = tuple(part.casefold() for part in parts)
        if not member.is_dir():
            if not key:
                raise ElmoDownloadError(f"{url}: the archive member {name!r} is a file without a name. {refused}")
            if key in files:
                first = files[key]
                held = f"{name!r} twice" if first == name else f"{first!r} and {name!r}, which name the same file"
                raise ElmoDownloadError(f"{url}: the archive holds {held}, so which one is the model's is unclear. {refused}")
            files[key] = name
        for depth in range(1, len(key) + (1 if member.is_dir() else 0)):
            folders.setdefault(key[:depth], name)
        total += member.file_size
    for key, name in files.items():
        if key in folders:
            raise ElmoDownloadError(
                f"{url}: the archive member {name!r} is a file, but {folders[key]!r} makes it a folder. {refused}"
            )
    if total > _MAX_UNPACKED_BYTES:
        raise ElmoDownloadError(
            f"{url}: the archive would unpack to {total} bytes, more than any model ({_MAX_UNPACKED_BYTES} bytes at "
            f"most). It was not unpacked; nothing was kept. Check the download location ({_location()})."
        )


def _model_root(unpacked: Path, url: str) -> Path:
    """The folder of the archive that holds ``config.json``: its top level, or its one subfolder that does."""
    if (unpacked / manylangs_io.CONFIG_FILE).is_file():
        return unpacked
    found = sorted(path.parent for path in unpacked.glob(f"*/{manylangs_io.CONFIG_FILE}"))
    if len(found) == 1:
        return found[0]
    held = sorted(p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*"))[:10]
    raise ElmoDownloadError(
        f"{url}: the archive holds {'no' if not found else 'more than one'} {manylangs_io.CONFIG_FILE} at its top "
        f"level or in one subfolder (it holds: {', '.join(held) or 'nothing'}), so it is not an ELMoForManyLangs "
        f"model. Nothing was kept; check the download location ({_location()})."
    )


def _write_manifest(model_dir: Path, url: str, digest: str) -> None:
    files = {}
    for path in sorted(model_dir.rglob("*")):
        if path.is_file():
            found = path.stat()
            files[path.relative_to(model_dir).as_posix()] = {
                "bytes": found.st_size,
                "mtime_ns": found.st_mtime_ns,
                "sha256": sha256_of(path),
            }
    manifest = {"url": url, "archive_sha256": digest, "files": files}
    write_text_atomic(model_dir / MANIFEST_FILE, _manifest_text(manifest))


def _manifest_text(manifest: Dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"


def _by_hand(model: ManyLangsModel, url: str) -> str:
    return (
        f"download {url} by hand, unzip it into a directory of its own, and pass that directory instead of "
        f"{PREFIX + model.code!r}."
    )


def _location() -> str:
    return f"{base_url()}; set {MIRROR_ENV} to use a mirror"
