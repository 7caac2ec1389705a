"""Downloading published ELMoForManyLangs models (``manylangs:CODE``), against a server on
127.0.0.1 that serves zip archives of the tiny fixture model; and the docs' list of them."""

import io
import json
import os
import re
import stat
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from local_server import CountingHandler, ShortBodyHandler, closed_port, files_under, mirror_at
from spacy_elmo import ElmoBiLM
from spacy_elmo.bilm import manylangs_download, manylangs_models
from spacy_elmo.bilm.manylangs_download import MANIFEST_FILE, download_manylangs
from spacy_elmo.bilm.manylangs_models import MODELS, markdown_table
from spacy_elmo.bilm.pretrained import resolve_model
from spacy_elmo.errors import ElmoDownloadError, ElmoModelNotFoundError

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "manylangs" / "cnn_words"
MODEL_FILES = ("char.dic", "cnn_tiny.json", "config.json", "encoder.pkl", "token_embedder.pkl", "word.dic")
GERMAN = MODELS["de"]
SENTENCES = [["Die", "Straße", "ist", "schön", "."], ["Köln", "liegt", "am", "Rhein"], ["x"]]


def make_archive(path: Path, folder: str = "", extra=()) -> bytes:
    """The fixture model as a published archive: its files (in ``folder`` if given), with a
    ``config_path`` that names the network config by an absolute path of the training machine,
    as the published ``config.json`` files do; ``extra`` adds (ZipInfo or name, bytes) members."""
    prefix = f"{folder}/" if folder else ""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in MODEL_FILES:
            data = (FIXTURE / name).read_bytes()
            if name == "config.json":
                config = json.loads(data)
                config["config_path"] = "/nonexistent/conll2018/models/word_elmo/" + config["config_path"]
                data = json.dumps(config).encode()
            archive.writestr(prefix + name, data)
        for member, data in extra:
            archive.writestr(member, data)
    return path.read_bytes()


@pytest.fixture
def mirror(tmp_path, monkeypatch, request):
    """A local mirror of the NLPL repository; the cache is tmp_path/cache."""
    with mirror_at(tmp_path, monkeypatch, manylangs_models.MIRROR_ENV, getattr(request, "param", CountingHandler)) as served:
        yield served


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def _url(model=GERMAN) -> str:
    return manylangs_models.archive_url(model)


@pytest.mark.parametrize("folder", ["", "German"])
def test_download_unpacks_a_model_that_computes_what_the_fixture_computes(mirror, cache, folder):
    root, requests = mirror
    make_archive(root / "142.zip", folder)
    directory = download_manylangs("manylangs:de")
    assert directory == cache / "manylangs" / "de"
    assert files_under(cache) == [
        "manylangs",
        "manylangs/de",
        *(f"manylangs/de/{n}" for n in sorted([*MODEL_FILES, MANIFEST_FILE])),
    ]
    assert requests == ["/142.zip"]
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    assert manifest["url"] == _url() and re.fullmatch(r"[0-9a-f]{64}", manifest["archive_sha256"])
    assert manifest["files"]["encoder.pkl"]["bytes"] == (FIXTURE / "encoder.pkl").stat().st_size

    expected = ElmoBiLM.from_pretrained(FIXTURE).embed_sentences(SENTENCES)
    for name in (directory, "manylangs:de", "MANYLANGS:DE"):
        for ours, theirs in zip(ElmoBiLM.from_pretrained(name).embed_sentences(SENTENCES), expected):
            np.testing.assert_array_equal(ours, theirs)
    assert requests == ["/142.zip"]  # the later loads used the cache


def test_the_component_takes_a_manylangs_name(mirror):
    import spacy
    from spacy.tokens import Doc

    root, _ = mirror
    make_archive(root / "142.zip")
    nlp = spacy.blank("de")
    nlp.add_pipe("elmo", config={"model": {"weights": "manylangs:de"}})
    doc = nlp(Doc(nlp.vocab, words=SENTENCES[0]))
    np.testing.assert_allclose(doc._.elmo_layers, ElmoBiLM.from_pretrained(FIXTURE).embed_sentences(SENTENCES[:1])[0], atol=1e-6)


def test_the_download_command_takes_a_language(mirror, cache, capsys):
    from spacy_elmo.__main__ import main as cli_main

    root, _ = mirror
    make_archive(root / "142.zip")
    assert cli_main(["download", "manylangs:de"]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "manylangs" / "de")
    assert cli_main(["download", "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert "small" in listed and "manylangs:de\tGerman" in listed and len(listed) == 4 + len(MODELS)
    assert cli_main(["download", "manylangs:xx"]) == 1
    err = capsys.readouterr().err
    assert "Unknown ELMoForManyLangs model 'manylangs:xx'" in err and "manylangs:de" in err


def test_a_known_checksum_is_verified(mirror, cache, monkeypatch):
    root, _ = mirror
    make_archive(root / "142.zip")
    monkeypatch.setitem(MODELS, "de", GERMAN._replace(sha256="0" * 64))
    with pytest.raises(ElmoDownloadError) as info:
        download_manylangs("manylangs:de")
    message = str(info.value)
    assert _url() in message and "published one is " + "0" * 64 in message and "by hand" in message
    assert files_under(cache) == []
    digest = manylangs_download.sha256_of(root / "142.zip")
    monkeypatch.setitem(MODELS, "de", GERMAN._replace(sha256=digest.upper()))
    assert download_manylangs("manylangs:de") == cache / "manylangs" / "de"


def test_a_cached_file_that_changed_is_reported(mirror, cache):
    root, requests = mirror
    make_archive(root / "142.zip")
    directory = download_manylangs("manylangs:de")
    data = (directory / "encoder.pkl").read_bytes()
    recorded = json.loads((directory / MANIFEST_FILE).read_text())["files"]["encoder.pkl"]["mtime_ns"]
    (directory / "encoder.pkl").write_bytes(data[:-10] + bytes(10))  # the same size, another time
    os.utime(directory / "encoder.pkl", ns=(recorded + 10**9, recorded + 10**9))
    with pytest.raises(ElmoDownloadError) as info:
        ElmoBiLM.from_pretrained("manylangs:de")
    message = str(info.value)
    assert str(directory / "encoder.pkl") in message and "truncated or changed" in message
    assert f"Delete {directory}" in message and "download manylangs:de" in message
    (directory / "encoder.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(ElmoDownloadError, match="truncated or changed"):
        download_manylangs("manylangs:de")
    (directory / MANIFEST_FILE).unlink()
    with pytest.raises(ElmoDownloadError, match=f"no readable {MANIFEST_FILE}"):
        download_manylangs("manylangs:de")
    assert requests == ["/142.zip"]


def test_a_cached_model_is_hashed_only_where_a_size_or_time_changed(mirror, cache, monkeypatch, capsys):
    from spacy_elmo.__main__ import main as cli_main

    root, _ = mirror
    make_archive(root / "142.zip")
    directory = download_manylangs("manylangs:de")
    hashed = []
    sha256_of = manylangs_download.sha256_of
    monkeypatch.setattr(manylangs_download, "sha256_of", lambda path: hashed.append(path.name) or sha256_of(path))
    ElmoBiLM.from_pretrained("manylangs:de")
    assert hashed == []

    # Touched, the same bytes: hashed once, accepted, and its new time recorded.
    encoder = directory / "encoder.pkl"
    recorded = json.loads((directory / MANIFEST_FILE).read_text())["files"]["encoder.pkl"]["mtime_ns"]
    os.utime(encoder, ns=(recorded + 10**9, recorded + 10**9))
    assert download_manylangs("manylangs:de") == directory and hashed == ["encoder.pkl"]
    assert json.loads((directory / MANIFEST_FILE).read_text())["files"]["encoder.pkl"]["mtime_ns"] == recorded + 10**9
    download_manylangs("manylangs:de")
    assert hashed == ["encoder.pkl"]

    # Changed in place keeping its size and time: not seen on use (the documented price), but the
    # download command hashes every file.
    data = encoder.read_bytes()
    encoder.write_bytes(data[:-10] + bytes(10))
    os.utime(encoder, ns=(recorded + 10**9, recorded + 10**9))
    assert download_manylangs("manylangs:de") == directory
    assert cli_main(["download", "manylangs:de"]) == 1
    err = capsys.readouterr().err
    assert str(encoder) in err and "truncated or changed" in err
    with pytest.raises(ElmoDownloadError, match="truncated or changed"):
        download_manylangs("manylangs:de", verify=True)


def _corrupt(data: bytes) -> bytes:
    """The archive with 16 bytes inside encoder.pkl's compressed data flipped."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        offset = archive.getinfo("encoder.pkl").header_offset
    name_length = int.from_bytes(data[offset + 26 : offset + 28], "little")
    extra_length = int.from_bytes(data[offset + 28 : offset + 30], "little")
    start = offset + 30 + name_length + extra_length + 100
    return data[:start] + bytes(b ^ 0xFF for b in data[start : start + 16]) + data[start + 16 :]


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "not a zip"])
def test_a_damaged_archive_is_an_error_that_keeps_nothing(mirror, cache, damage):
    root, _ = mirror
    data = make_archive(root / "142.zip")
    damaged = {"truncated": data[: len(data) // 2], "corrupted": _corrupt(data), "not a zip": b"<html>Not found</html>"}
    (root / "142.zip").write_bytes(damaged[damage])
    with pytest.raises(ElmoDownloadError) as info:
        download_manylangs("manylangs:de")
    message = str(info.value)
    assert _url() in message and "Nothing was kept" in message and "run again" in message
    assert files_under(cache) == []


@pytest.mark.parametrize("mirror", [ShortBodyHandler], indirect=True)
def test_a_connection_closed_early_keeps_nothing(mirror, cache):
    root, _ = mirror
    make_archive(root / "142.zip")
    with pytest.raises(ElmoDownloadError, match="ended after"):
        download_manylangs("manylangs:de")
    assert files_under(cache) == []


def _link(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    "member, says",
    [
        ("../../escaped.txt", "outside the model folder"),
        ("German/../../escaped.txt", "outside the model folder"),
        ("/tmp/escaped.txt", "outside the model folder"),
        (_link("word.dic.link"), "symbolic link"),
    ],
)
def test_an_unsafe_archive_is_refused_before_anything_is_written(mirror, cache, tmp_path, member, says):
    root, _ = mirror
    make_archive(root / "142.zip", extra=[(member, b"/etc/passwd")])
    with pytest.raises(ElmoDownloadError) as info:
        download_manylangs("manylangs:de")
    message = str(info.value)
    name = member.filename if isinstance(member, zipfile.ZipInfo) else member
    assert _url() in message and repr(name) in message and says in message and "not unpacked" in message
    assert files_under(cache) == [] and not (tmp_path / "escaped.txt").exists()


@pytest.mark.parametrize(
    "folder, extra, says",
    [
        ("German", "German//config.json", "'German/config.json' and 'German//config.json', which name the same file"),
        ("", "./word.dic", "'word.dic' and './word.dic', which name the same file"),
        ("", "WORD.DIC", "'word.dic' and 'WORD.DIC', which name the same file"),
        ("", "word.dic/extra.txt", "'word.dic' is a file, but 'word.dic/extra.txt' makes it a folder"),
        ("", zipfile.ZipInfo("word.dic/"), "'word.dic' is a file, but 'word.dic/' makes it a folder"),
    ],
)
def test_members_that_land_on_the_same_file_are_refused_before_anything_is_written(mirror, cache, folder, extra, says):
    root, _ = mirror
    make_archive(root / "142.zip", folder, extra=[(extra, b"{}")])
    with pytest.raises(ElmoDownloadError) as info:
        download_manylangs("manylangs:de")
    message = str(info.value)
    assert _url() in message and says in message and "unsafe and was not unpacked" in message
    assert "Free disk space" not in message
    assert files_under(cache) == []


@pytest.mark.parametrize("extra", ["German//config.json", "German/word.dic/extra.txt", "German/config.json/"])
def test_a_clash_found_while_unpacking_is_reported_as_unsafe(mirror, cache, monkeypatch, extra):
    """Where the disk finds a clash the member check did not (it compares names as most disks do),
    the unpack reports the member, not a disk full."""
    root, _ = mirror
    make_archive(root / "142.zip", "German", extra=[(extra, b"{}")])
    monkeypatch.setattr(manylangs_download, "_check_members", lambda members, url: None)
    with pytest.raises(ElmoDownloadError) as info:
        download_manylangs("manylangs:de")
    message = str(info.value)
    assert repr(extra) in message and "another member already holds" in message and "unsafe and was not unpacked" in message
    assert "Free disk space" not in message
    assert files_under(cache) == []


def test_an_archive_with_more_members_than_a_model_is_refused(mirror, cache, monkeypatch):
    root, _ = mirror
    spare = manylangs_download._MAX_MEMBERS - len(MODEL_FILES)
    make_archive(root / "142.zip", extra=[(f"notes/{i}.txt", b"") for i in range(spare + 1)])
    with pytest.raises(ElmoDownloadError) as info:
        download_manylangs("manylangs:de")
    assert f"holds {manylangs_download._MAX_MEMBERS + 1} members" in str(info.value)
    assert files_under(cache) == []
    make_archive(root / "142.zip", extra=[(f"notes/{i}.txt", b"") for i in range(spare)])
    assert download_manylangs("manylangs:de") == cache / "manylangs" / "de"


def test_an_archive_larger_than_any_model_is_refused(mirror, cache, monkeypatch):
    root, _ = mirror
    make_archive(root / "142.zip")
    with zipfile.ZipFile(root / "142.zip") as archive:
        model_bytes = sum(member.file_size for member in archive.infolist())
    limit = model_bytes + 1000
    monkeypatch.setattr(manylangs_download, "_MAX_UNPACKED_BYTES", limit)
    make_archive(root / "142.zip", extra=[("padding.bin", bytes(1001))])
    with pytest.raises(ElmoDownloadError) as info:
        download_manylangs("manylangs:de")
    message = str(info.value)
    assert f"would unpack to {limit + 1} bytes" in message and f"({limit} bytes at most)" in message
    assert files_under(cache) == []
    make_archive(root / "142.zip", extra=[("padding.bin", bytes(1000))])
    assert download_manylangs("manylangs:de") == cache / "manylangs" / "de"


def test_an_archive_without_a_model_is_named(mirror, cache):
    root, _ = mirror
    with zipfile.ZipFile(root / "142.zip", "w") as archive:
        archive.writestr("README.txt", "nothing here")
    with pytest.raises(ElmoDownloadError, match=r"holds no config\.json .*README\.txt"):
        download_manylangs("manylangs:de")
    with zipfile.ZipFile(root / "142.zip", "w") as archive:
        for name in ("config.json", "cnn_tiny.json", "char.dic"):
            archive.write(FIXTURE / name, name)
    with pytest.raises(ElmoDownloadError, match=r"does not hold a loadable model: .*has no token_embedder\.pkl"):
        download_manylangs("manylangs:de")
    with pytest.warns(UserWarning, match="Duplicate name"):
        make_archive(root / "142.zip", extra=[("word.dic", b"")])
    with pytest.raises(ElmoDownloadError, match=r"holds 'word\.dic' twice"):
        download_manylangs("manylangs:de")
    assert files_under(cache) == []


def test_http_404_names_the_url_and_the_fix(mirror, cache):
    with pytest.raises(ElmoDownloadError) as info:
        resolve_model("manylangs:fr")
    message = str(info.value)
    assert _url(MODELS["fr"]) in message and "HTTP 404" in message
    assert str(cache / "manylangs" / "fr") in message and "by hand" in message and manylangs_models.MIRROR_ENV in message
    assert files_under(cache) == []


def test_no_network_names_the_url_and_the_fix(monkeypatch, cache):
    port = closed_port()
    monkeypatch.setenv("SPACY_ELMO_CACHE", str(cache))
    monkeypatch.setenv(manylangs_models.MIRROR_ENV, f"http://127.0.0.1:{port}")
    with pytest.raises(ElmoDownloadError) as info:
        ElmoBiLM.from_pretrained("manylangs:de")
    message = str(info.value)
    assert f"http://127.0.0.1:{port}/142.zip" in message and "network connection" in message and "by hand" in message
    assert files_under(cache) == []


def test_an_interrupted_download_leaves_nothing_that_loads(mirror, cache, monkeypatch):
    root, _ = mirror
    make_archive(root / "142.zip")

    def killed(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(manylangs_download, "_write_manifest", killed)
        with pytest.raises(KeyboardInterrupt):
            download_manylangs("manylangs:de")
    assert files_under(cache) == []
    # What a process killed outright leaves (a hidden temporary folder) is never taken for the model.
    leftover = cache / "manylangs" / ".de.tmp-0123456789ab"
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("{}")
    assert download_manylangs("manylangs:de") == cache / "manylangs" / "de"


def test_a_download_removes_the_stale_temporaries_of_a_killed_one(mirror, cache):
    """What a killed download of the model left a day ago goes; what may be a running download's
    (younger) stays, and so does another model's."""
    root, _ = mirror
    make_archive(root / "142.zip")
    folder = cache / "manylangs"
    folder.mkdir(parents=True)
    stale_archive, stale_folder = folder / ".de.zip.tmp-0123456789ab", folder / ".de.tmp-0123456789ab"
    fresh_archive, other_model = folder / ".de.zip.tmp-ba9876543210", folder / ".fr.tmp-0123456789ab"
    stale_archive.write_bytes(b"PK partial")
    stale_folder.mkdir()
    (stale_folder / "encoder.pkl").write_bytes(b"partial")
    fresh_archive.write_bytes(b"PK partial")
    other_model.mkdir()
    two_days_ago = time.time() - 2 * 24 * 3600
    for path in (stale_archive, stale_folder, other_model):
        os.utime(path, (two_days_ago, two_days_ago))
    assert download_manylangs("manylangs:de") == folder / "de"
    assert sorted(path.name for path in folder.iterdir()) == [".de.zip.tmp-ba9876543210", ".fr.tmp-0123456789ab", "de"]


def test_unknown_codes_list_the_languages():
    with pytest.raises(ElmoModelNotFoundError) as info:
        resolve_model("manylangs:klingon")
    message = str(info.value)
    assert all(name in message for name in manylangs_models.names())


def test_init_config_accepts_a_manylangs_name():
    from spacy_elmo.init_config import check_weights

    assert check_weights("manylangs:de") == "manylangs:de"


def test_the_docs_table_is_the_list_in_the_code():
    """docs/languages.md's table of models is what :func:`markdown_table` writes (one list, no drift)."""
    page = (REPO / "docs" / "languages.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- manylangs-models:start -->\n(.*?)\n<!-- manylangs-models:end -->", page, re.S)
    assert block is not None
    assert block.group(1).strip() == markdown_table().strip(), (
        'paste the output of python -c "from spacy_elmo.bilm.manylangs_models import markdown_table; print(markdown_table())"'
    )
    assert len(MODELS) == 44 and len({m.nlpl_id for m in MODELS.values()}) == 44
    assert sorted(m.nlpl_id for m in MODELS.values()) == list(range(136, 180))
    assert all(m.sha256 is None for m in MODELS.values()) == ("no checksums are published" in page)
