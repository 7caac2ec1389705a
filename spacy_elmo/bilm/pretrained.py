"""Find a biLM's ``options.json`` + ``weights.hdf5``: a weights file, a model directory or a published model.

Published models (docs/design.md §8) are downloaded once into a cache directory, atomically and
verified, so a cached pair can be used without touching the network again.
"""

import json
import os
import sys
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from tqdm import tqdm

from ..errors import ElmoDownloadError, ElmoError, ElmoModelNotFoundError, ElmoOptionsError, ElmoWeightsError
from ..files import PathLike, atomic_path
from . import manylangs_io, manylangs_models
from .options import ElmoOptions
from .weights_io import read_weights

OPTIONS_FILE = "options.json"
WEIGHTS_FILE = "weights.hdf5"

# Published model name -> file stem of the AllenNLP download location.
PUBLISHED_MODELS: Dict[str, str] = {
    "small": "elmo_2x1024_128_2048cnn_1xhighway",
    "medium": "elmo_2x2048_256_2048cnn_1xhighway",
    "original": "elmo_2x4096_512_2048cnn_2xhighway",
    "original-5.5b": "elmo_2x4096_512_2048cnn_2xhighway_5.5B",
}

DEFAULT_MODEL_NAME = "default"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "default_model"
"""The compact English biLM shipped inside the package (see its README), usable offline."""

DEFAULT_MIRROR = "https://s3-us-west-2.amazonaws.com/allennlp/models/elmo"
CACHE_ENV = "SPACY_ELMO_CACHE"
MIRROR_ENV = "SPACY_ELMO_MIRROR"

_TIMEOUT_S = 60.0
_CHUNK_BYTES = 1 << 20
_NETWORK_ERRORS = (urllib.error.URLError, HTTPException, TimeoutError, ConnectionError, ValueError)


def default_cache_dir() -> Path:
    """``$SPACY_ELMO_CACHE``, else ``$XDG_CACHE_HOME/spacy_elmo``, else ``~/.cache/spacy_elmo``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "spacy_elmo"


def base_url() -> str:
    """``$SPACY_ELMO_MIRROR`` (for mirrors and tests), else the AllenNLP S3 location."""
    return (os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR).rstrip("/")


def model_urls(name: str) -> Tuple[str, str]:
    """(options URL, weights URL) of a published model."""
    stem = _published_stem(name)
    root = f"{base_url()}/{stem}/{stem}"
    return f"{root}_options.json", f"{root}_weights.hdf5"


def resolve_model(name_or_path: PathLike) -> Tuple[Path, Path]:
    """(options path, weights path) of a published model name or a model directory.

    For an ELMoForManyLangs model directory (``config.json`` and no ``options.json``) they are its
    ``config.json`` and ``encoder.pkl`` (:meth:`ElmoBiLM.from_files` loads the directory from them).
    ``"default"`` is the biLM shipped inside the package. A published name
    (case-insensitive) always means the published model, downloaded into the cache if
    needed; write e.g. ``./small`` to mean a directory called ``small``. ``manylangs:CODE`` is
    a published ELMoForManyLangs model (:mod:`.manylangs_models`), downloaded and unpacked the same way.
    """
    text = os.fspath(name_or_path)
    if text.lower() == DEFAULT_MODEL_NAME:
        return _model_dir_files(DEFAULT_MODEL_DIR)
    if manylangs_models.is_name(text):
        return manylangs_io.model_files(download_named(text))
    if text.lower() in PUBLISHED_MODELS:
        directory = download_model(text)
        return directory / OPTIONS_FILE, directory / WEIGHTS_FILE
    path = Path(text).expanduser()
    if path.is_dir():
        return _model_dir_files(path)
    if path.exists():
        raise ElmoModelNotFoundError(
            f"{path} is a file, not a model directory. Pass the directory that holds "
            f"{OPTIONS_FILE} and {WEIGHTS_FILE}, or a published model name ({_known_names()})."
        )
    raise ElmoModelNotFoundError(
        f"Unknown ELMo model {text!r}: it is neither a published model name ({_known_names()}) "
        f"nor an existing directory. Pass one of those names, or a directory holding "
        f"{OPTIONS_FILE} and {WEIGHTS_FILE}."
    )


def resolve_files(
    weights: PathLike,
    options: Optional[PathLike] = None,
    *,
    weights_setting: str = "weights",
    options_setting: str = "options",
) -> Tuple[Path, Path]:
    """(options path, weights path) of a biLM named as every entry point names one.

    ``weights`` is ``default``, a published model name, a model directory (see
    :func:`resolve_model`) or a weights.hdf5 file; ``options`` is the options.json to use
    instead of the one found beside the weights (required for a weights file without one).
    Errors name ``weights_setting`` / ``options_setting``, the caller's words for them.
    """
    weights_path = Path(os.fspath(weights)).expanduser()
    named_as_file = weights_path.suffix.lower() in (".hdf5", ".h5")
    if named_as_file and not weights_path.exists():
        raise ElmoWeightsError(
            f"Weights file not found: {weights_path}. Set {weights_setting} to an existing weights.hdf5, "
            f"a model directory, {DEFAULT_MODEL_NAME!r} or a published model name."
        )
    if named_as_file and weights_path.is_dir() and not (weights_path / OPTIONS_FILE).is_file():
        raise ElmoWeightsError(
            f"{weights_path} is a directory, not an HDF5 weights file. Set {weights_setting} to the "
            f"{WEIGHTS_FILE} file itself, or to a model directory holding {OPTIONS_FILE} and {WEIGHTS_FILE}."
        )
    if weights_path.is_file():
        options_path = Path(options) if options else weights_path.with_name(OPTIONS_FILE)
        if not options and not options_path.is_file():
            raise ElmoOptionsError(
                f"No options file for {weights_path}: set {options_setting} to the {OPTIONS_FILE} "
                f"published with these weights (looked for {options_path})."
            )
        return options_path, weights_path
    options_path, weights_path = resolve_model(weights)
    return (Path(options) if options else options_path), weights_path


def make_cache_directory(directory: Path) -> bool:
    """Create ``directory`` in the cache (and its parents); return whether it was created.

    A directory that cannot be created is an :class:`ElmoDownloadError` naming it and the setting that moves the cache."""
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ElmoDownloadError(
            f"Cannot create the ELMo cache directory {directory} ({err}). Set {CACHE_ENV} to a writable directory."
        ) from None
    return created


def download_model(name: str, cache_dir: Optional[PathLike] = None, progress: bool = True) -> Path:
    """Download a published model (if not cached yet) and return its verified directory.

    Files land atomically in ``<cache>/<stem>/`` and are verified before they are kept; on
    any failure the files this call created are removed, so the cache stays as it was.
    """
    stem = _published_stem(name)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    directory = root / stem
    options_path, weights_path = directory / OPTIONS_FILE, directory / WEIGHTS_FILE
    if options_path.is_file() and weights_path.is_file():
        return directory
    options_url, weights_url = model_urls(name)
    created_dir = make_cache_directory(directory)
    created: List[Path] = []
    try:
        if not options_path.is_file():
            _fetch(options_url, options_path, name, directory, progress, _verify_options)
            created.append(options_path)
        options = ElmoOptions.from_file(options_path)
        if weights_path.is_file():
            _verify_cached_weights(weights_path, options, options_url)
        else:
            _fetch(
                weights_url,
                weights_path,
                name,
                directory,
                progress,
                lambda tmp, url: _verify_weights(tmp, options, url),
            )
            created.append(weights_path)
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        if created_dir:
            _remove_if_empty(directory)
        raise
    return directory


def download_named(name: str, cache_dir: Optional[PathLike] = None, progress: bool = True, verify: bool = False) -> Path:
    """Download a published model by name, an AllenNLP one (:data:`PUBLISHED_MODELS`) or
    ``manylangs:CODE``, into the cache if it is not there yet; return its model directory.

    ``verify`` hashes every file of a cached ``manylangs:CODE`` model against its manifest."""
    if manylangs_models.is_name(name):
        # Imported here: the ELMoForManyLangs download builds on this module's cache and streaming.
        from .manylangs_download import download_manylangs

        return download_manylangs(name, cache_dir=cache_dir, progress=progress, verify=verify)
    return download_model(name, cache_dir=cache_dir, progress=progress)


def network_reason(err: BaseException) -> str:
    """What a failed request says went wrong: the HTTP status, or the connection's reason."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


def _published_stem(name: str) -> str:
    """The file stem of a published model name (case-insensitive); unknown names list the known ones."""
    stem = PUBLISHED_MODELS.get(name.lower())
    if stem is None:
        raise ElmoModelNotFoundError(
            f"Unknown published ELMo model {name!r}. Published models: {', '.join(map(repr, PUBLISHED_MODELS))}, "
            f"and ELMoForManyLangs models as '{manylangs_models.PREFIX}CODE' (e.g. '{manylangs_models.PREFIX}de'); "
            f"to use other weights, pass a directory holding {OPTIONS_FILE} and {WEIGHTS_FILE}."
        )
    return stem


def _known_names() -> str:
    return ", ".join(repr(n) for n in [DEFAULT_MODEL_NAME, *PUBLISHED_MODELS, f"{manylangs_models.PREFIX}CODE"])


def _model_dir_files(directory: Path) -> Tuple[Path, Path]:
    if manylangs_io.is_model_dir(directory):
        return manylangs_io.model_files(directory)
    options_path, weights_path = directory / OPTIONS_FILE, directory / WEIGHTS_FILE
    not_files = [p for p in (options_path, weights_path) if p.exists() and not p.is_file()]
    if not_files:
        raise ElmoModelNotFoundError(
            f"{not_files[0]} is a {'directory' if not_files[0].is_dir() else 'special file'}, not a file: a model "
            f"directory needs {OPTIONS_FILE} and {WEIGHTS_FILE} as plain files, published together. Replace it "
            f"with the file itself."
        )
    missing = [p.name for p in (options_path, weights_path) if not p.is_file()]
    if missing:
        present = sorted(p.name for p in directory.iterdir())[:8]
        raise ElmoModelNotFoundError(
            f"Model directory {directory} has no {' and no '.join(missing)} "
            f"(it holds: {', '.join(present) or 'nothing'}). A model directory needs "
            f"{OPTIONS_FILE} and {WEIGHTS_FILE}, published together (or, for an ELMoForManyLangs model, "
            f"{manylangs_io.CONFIG_FILE}, {manylangs_io.CHAR_LEXICON_FILE} and its .pkl files): add or rename the files."
        )
    return options_path, weights_path


def _fetch(
    url: str,
    target: Path,
    name: str,
    directory: Path,
    progress: bool,
    verify: Callable[[Path, str], None],
) -> None:
    """Stream ``url`` into a temporary file next to ``target``, verify it, then rename it into place."""
    with atomic_path(target) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
                _stream(response, tmp, url, f"{name} {target.name}", progress)
        except ElmoDownloadError:
            raise
        except _NETWORK_ERRORS as err:
            raise ElmoDownloadError(_network_message(url, directory, name, err)) from None
        except OSError as err:
            raise ElmoDownloadError(
                f"Cannot write {tmp} while downloading {url} ({err}). Free disk space or set "
                f"{CACHE_ENV} to a writable directory with room for the model."
            ) from None
        try:
            verify(tmp, url)
        except ElmoError as err:
            raise ElmoDownloadError(
                f"A downloaded file failed verification: {err} Nothing was kept in {directory}. "
                f"Run again to retry; if it keeps failing, check the download location "
                f"({_location()}) or download the files by hand."
            ) from err


def _stream(response: Any, tmp: Path, url: str, desc: str, progress: bool) -> None:
    """Copy the response in chunks, with a progress bar; fail if it ends early."""
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    received = 0
    show = progress and sys.stderr.isatty()
    with (
        open(tmp, "xb") as out,
        tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not show) as bar,
    ):
        while True:
            chunk = response.read(_CHUNK_BYTES)
            if not chunk:
                break
            out.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    if total is not None and received != total:
        raise ElmoDownloadError(
            f"Download of {url} ended after {received} of {total} bytes (connection closed "
            f"early). Nothing was kept; run again to retry, and check your network connection."
        )


def _network_message(url: str, directory: Path, name: str, err: BaseException) -> str:
    reason = network_reason(err)
    stem = _published_stem(name)
    return (
        f"Could not download {url} ({reason}) into {directory}. Check your network connection "
        f"and the download location ({_location()}), or download {stem}_options.json and "
        f"{stem}_weights.hdf5 by hand, save them as {OPTIONS_FILE} and {WEIGHTS_FILE} in one "
        f"directory, and pass that directory instead of {name!r}."
    )


def _location() -> str:
    return f"{base_url()}; set {MIRROR_ENV} to use a mirror"


def _verify_options(path: Path, url: str) -> None:
    """Parse a downloaded options file, naming its URL (not the temp file) in errors."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ElmoOptionsError(f"{url} is not readable JSON ({err}).") from None
    ElmoOptions.from_dict(data, source=url)


def _verify_weights(path: Path, options: ElmoOptions, source: str) -> None:
    read_weights(path, options, source=source)


def _verify_cached_weights(weights_path: Path, options: ElmoOptions, options_url: str) -> None:
    """A cached weights file whose options had to be fetched again must still match them."""
    try:
        _verify_weights(weights_path, options, str(weights_path))
    except ElmoError as err:
        raise ElmoDownloadError(
            f"The cached {weights_path} does not fit the options downloaded from {options_url}: "
            f"{err} Delete {weights_path.parent} and run again to download both files afresh."
        ) from err


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass
