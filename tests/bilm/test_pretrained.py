"""Model resolution and downloads, against a local HTTP server (no internet access)."""

from pathlib import Path

import pytest

from local_server import CountingHandler, ShortBodyHandler, closed_port, files_under, mirror_at
from spacy_elmo.bilm import pretrained
from spacy_elmo.bilm.pretrained import (
    PUBLISHED_MODELS,
    default_cache_dir,
    download_model,
    model_urls,
    resolve_model,
)
from spacy_elmo.errors import ElmoDownloadError, ElmoModelNotFoundError

SMALL = PUBLISHED_MODELS["small"]
MEDIUM = PUBLISHED_MODELS["medium"]


def _publish(root: Path, stem: str, options_bytes: bytes, weights_bytes: bytes) -> None:
    folder = root / stem
    folder.mkdir(parents=True)
    (folder / f"{stem}_options.json").write_bytes(options_bytes)
    (folder / f"{stem}_weights.hdf5").write_bytes(weights_bytes)


@pytest.fixture
def mirror(tmp_path, monkeypatch, request):
    """A local HTTP mirror (tests publish the tiny biLM on it under the 'small' file names)."""
    with mirror_at(tmp_path, monkeypatch, "SPACY_ELMO_MIRROR", getattr(request, "param", CountingHandler), "/") as served:
        yield served


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def test_download_then_cached(mirror, cache, tiny_model):
    root, requests = mirror
    options_src, weights_src = tiny_model
    _publish(root, SMALL, options_src.read_bytes(), weights_src.read_bytes())

    options_path, weights_path = resolve_model("small")
    assert options_path == cache / SMALL / "options.json"
    assert weights_path == cache / SMALL / "weights.hdf5"
    assert options_path.read_bytes() == options_src.read_bytes()
    assert weights_path.read_bytes() == weights_src.read_bytes()
    assert sorted(requests) == sorted([f"/{SMALL}/{SMALL}_options.json", f"/{SMALL}/{SMALL}_weights.hdf5"])
    assert files_under(cache) == [SMALL, f"{SMALL}/options.json", f"{SMALL}/weights.hdf5"]

    assert resolve_model("SMALL") == (options_path, weights_path)
    assert len(requests) == 2  # the second call did not touch the server


def test_only_missing_file_is_downloaded(mirror, cache, tiny_model):
    root, requests = mirror
    _publish(root, SMALL, tiny_model[0].read_bytes(), tiny_model[1].read_bytes())
    resolve_model("small")
    (cache / SMALL / "weights.hdf5").unlink()
    requests.clear()
    resolve_model("small")
    assert requests == [f"/{SMALL}/{SMALL}_weights.hdf5"]


def test_download_model_explicit_cache_dir(mirror, tmp_path, tiny_model):
    root, _ = mirror
    _publish(root, SMALL, tiny_model[0].read_bytes(), tiny_model[1].read_bytes())
    folder = download_model("small", cache_dir=tmp_path / "elsewhere", progress=False)
    assert folder == tmp_path / "elsewhere" / SMALL
    assert (folder / "weights.hdf5").read_bytes() == tiny_model[1].read_bytes()


def test_unknown_name_lists_published_models(mirror):
    with pytest.raises(ElmoModelNotFoundError) as info:
        resolve_model("large")
    message = str(info.value)
    for name in PUBLISHED_MODELS:
        assert repr(name) in message
    assert "directory" in message
    with pytest.raises(ElmoModelNotFoundError, match="'small'"):
        download_model("default")


def test_http_404_names_url_and_leaves_nothing(mirror, cache):
    with pytest.raises(ElmoDownloadError) as info:
        resolve_model("medium")
    message = str(info.value)
    assert model_urls("medium")[0] in message
    assert "404" in message
    assert str(cache / MEDIUM) in message
    assert "by hand" in message
    assert files_under(cache) == []


def test_truncated_weights_are_rejected_and_removed(mirror, cache, tiny_model):
    root, _ = mirror
    data = tiny_model[1].read_bytes()
    _publish(root, SMALL, tiny_model[0].read_bytes(), data[: len(data) // 2])
    with pytest.raises(ElmoDownloadError) as info:
        resolve_model("small")
    message = str(info.value)
    assert model_urls("small")[1] in message
    assert "not a readable HDF5 file" in message
    assert files_under(cache) == []


@pytest.mark.parametrize("mirror", [ShortBodyHandler], indirect=True)
def test_connection_closed_early(mirror, cache, tiny_model):
    root, _ = mirror
    _publish(root, SMALL, tiny_model[0].read_bytes(), tiny_model[1].read_bytes())
    with pytest.raises(ElmoDownloadError, match="ended after"):
        resolve_model("small")
    assert files_under(cache) == []


def test_mismatched_pair_is_rejected(mirror, cache, tiny_model):
    root, _ = mirror
    options = tiny_model[0].read_text().replace('"projection_dim": 16', '"projection_dim": 32')
    _publish(root, SMALL, options.encode(), tiny_model[1].read_bytes())
    with pytest.raises(ElmoDownloadError, match=r"'CNN_proj/W_proj' has shape \(28, 16\)"):
        resolve_model("small")
    assert files_under(cache) == []


def test_html_instead_of_options(mirror, cache, tiny_model):
    root, _ = mirror
    _publish(root, SMALL, b"<html>Access denied</html>", tiny_model[1].read_bytes())
    with pytest.raises(ElmoDownloadError, match=r"_options\.json is not readable JSON"):
        resolve_model("small")
    assert files_under(cache) == []


def test_unreachable_server(monkeypatch, cache):
    monkeypatch.setenv("SPACY_ELMO_CACHE", str(cache))
    port = closed_port()
    monkeypatch.setenv("SPACY_ELMO_MIRROR", f"http://127.0.0.1:{port}")
    with pytest.raises(ElmoDownloadError, match=f"127.0.0.1:{port}/{SMALL}"):
        resolve_model("small")
    assert files_under(cache) == []


def test_directory_resolves_to_itsfiles_under(tmp_path, tiny_model):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "options.json").write_bytes(tiny_model[0].read_bytes())
    (folder / "weights.hdf5").write_bytes(tiny_model[1].read_bytes())
    assert resolve_model(str(folder)) == (folder / "options.json", folder / "weights.hdf5")
    assert resolve_model(folder) == (folder / "options.json", folder / "weights.hdf5")


def test_directory_missing_weights(tmp_path, tiny_model):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "options.json").write_bytes(tiny_model[0].read_bytes())
    (folder / "lm_weights.hdf5").write_bytes(b"")
    with pytest.raises(ElmoModelNotFoundError) as info:
        resolve_model(str(folder))
    message = str(info.value)
    assert str(folder) in message
    assert "no weights.hdf5" in message
    assert "lm_weights.hdf5" in message


def test_file_instead_of_directory(tiny_model):
    with pytest.raises(ElmoModelNotFoundError, match="is a file, not a model directory"):
        resolve_model(str(tiny_model[0]))


def test_cache_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("SPACY_ELMO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "spacy_elmo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "spacy_elmo"
    monkeypatch.setenv("SPACY_ELMO_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"


def test_canonical_urls(monkeypatch):
    monkeypatch.delenv("SPACY_ELMO_MIRROR", raising=False)
    stem = PUBLISHED_MODELS["original-5.5b"]
    assert stem == "elmo_2x4096_512_2048cnn_2xhighway_5.5B"
    assert model_urls("Original-5.5B") == (
        f"{pretrained.DEFAULT_MIRROR}/{stem}/{stem}_options.json",
        f"{pretrained.DEFAULT_MIRROR}/{stem}/{stem}_weights.hdf5",
    )
    assert pretrained.DEFAULT_MIRROR == "https://s3-us-west-2.amazonaws.com/allennlp/models/elmo"


def test_the_download_command_fetches_into_the_cache_and_prints_the_folder(mirror, cache, tiny_model, capsys):
    from spacy_elmo.__main__ import main as cli_main

    root, _requests = mirror
    _publish(root, SMALL, tiny_model[0].read_bytes(), tiny_model[1].read_bytes())
    assert cli_main(["download", "small"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(cache / SMALL)
    assert files_under(cache) == [SMALL, f"{SMALL}/options.json", f"{SMALL}/weights.hdf5"]


def test_the_download_command_reports_an_unreachable_server_in_one_line(monkeypatch, cache, capsys):
    from spacy_elmo.__main__ import main as cli_main

    monkeypatch.setenv("SPACY_ELMO_CACHE", str(cache))
    port = closed_port()
    monkeypatch.setenv("SPACY_ELMO_MIRROR", f"http://127.0.0.1:{port}")
    assert cli_main(["download", "small"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and f"127.0.0.1:{port}" in err[0]
    assert files_under(cache) == []
