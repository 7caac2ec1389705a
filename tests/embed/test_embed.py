"""Corpus embedding (``python -m spacy_elmo embed`` / ``embed-merge``): AllenNLP's HDF5 layout,
values equal to ``ElmoBiLM.embed_sentences``, resume after a kill, shards, awkward lines, errors."""

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from spacy_elmo import ElmoBiLM
from spacy_elmo.__main__ import main as cli_main
from spacy_elmo.embed import EmbedResumeError, EmbedSettings, EmbedWarning, Shard, embed_corpus, load_embedding_bilm
from spacy_elmo.embed import run as embed_run
from spacy_elmo.embed.partial import PartialRun

WORDS = "the a river bank money city sat ran said old new small . , London Paris John Mary 1990 café".split()

pytestmark = pytest.mark.usefixtures("one_thread")


def _corpus_lines(n: int, seed: int = 0, longest: int = 20):
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, longest))) for _ in range(n)]


def _write_lines(path: Path, lines) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _embed(*args: str) -> int:
    return cli_main(["embed", *map(str, args), "--no-progress"])


def _weights(tiny_model) -> str:
    return str(tiny_model[1])


def _datasets(path: Path):
    with h5py.File(path, "r") as h5:
        return {key: h5[key][()] for key in h5}


def _assert_same_file(a: Path, b: Path, exact: bool = True) -> None:
    first, second = _datasets(a), _datasets(b)
    assert sorted(first) == sorted(second)
    for key in first:
        if key == "sentence_to_index" or exact:
            np.testing.assert_array_equal(first[key], second[key], err_msg=key)
        else:
            assert first[key].shape == second[key].shape and first[key].dtype == second[key].dtype
            np.testing.assert_allclose(first[key], second[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("flag", ["--all", "--top", "--average"])
def test_layout_and_values_equal_embed_sentences(tiny_model, tmp_path, flag):
    lines = _corpus_lines(40) + ["  the  river bank  ", "the river bank"]  # stripped: a repeated sentence
    source = _write_lines(tmp_path / "corpus.txt", lines)
    out = tmp_path / "out.hdf5"
    assert _embed(source, out, "--weights", _weights(tiny_model), flag) == 0

    expected = ElmoBiLM.from_files(*tiny_model).embed_sentences([line.split() for line in lines], batch_size=64)
    with h5py.File(out, "r") as h5:
        assert sorted(h5.keys()) == sorted([str(i) for i in range(len(lines))] + ["sentence_to_index"])
        for i, layers in enumerate(expected):
            stored = h5[str(i)]
            assert stored.dtype == np.float32
            want = {"--all": layers, "--top": layers[-1], "--average": layers.mean(axis=0)}[flag]
            assert (
                stored.shape == want.shape == ((3, len(lines[i].split()), 32) if flag == "--all" else (len(lines[i].split()), 32))
            )
            np.testing.assert_array_equal(stored[()], want)
        assert h5["sentence_to_index"].shape == (1,)
        mapping = json.loads(h5["sentence_to_index"][0])
    assert mapping == {line.strip(): str(i) for i, line in enumerate(lines)}
    assert mapping["the river bank"] == str(len(lines) - 1)


def test_gzip_input_and_spacy_tokenizer(tiny_model, tmp_path):
    lines = ["Don't stop.", "She sat on the river bank."]
    plain = _write_lines(tmp_path / "corpus.txt", lines)
    with gzip.open(tmp_path / "corpus.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    for source, out in ((plain, tmp_path / "plain.hdf5"), (tmp_path / "corpus.txt.gz", tmp_path / "gz.hdf5")):
        assert _embed(source, out, "--weights", _weights(tiny_model), "--spacy-tokenizer", "en") == 0
    _assert_same_file(tmp_path / "plain.hdf5", tmp_path / "gz.hdf5")
    tokens = [["Do", "n't", "stop", "."], ["She", "sat", "on", "the", "river", "bank", "."]]
    expected = ElmoBiLM.from_files(*tiny_model).embed_sentences(tokens)
    stored = _datasets(tmp_path / "plain.hdf5")
    for i, layers in enumerate(expected):
        np.testing.assert_array_equal(stored[str(i)], layers)
    assert json.loads(stored["sentence_to_index"][0]) == {"Don't stop.": "0", "She sat on the river bank.": "1"}


def test_empty_and_long_lines(tiny_model, tmp_path, capsys):
    long_line = " ".join(WORDS[:12])
    lines = ["the river", "", long_line, "   ", "a bank ."]
    source = _write_lines(tmp_path / "corpus.txt", lines)
    out = tmp_path / "out.hdf5"
    assert _embed(source, out, "--weights", _weights(tiny_model), "--max-piece-length", "5") == 0
    err = capsys.readouterr().err
    assert "warning: 2 empty line(s) were stored as arrays with 0 tokens" in err
    assert "warning: 1 line(s) longer than 5 tokens were read in pieces" in err
    stored = _datasets(out)
    assert stored["1"].shape == stored["3"].shape == (3, 0, 32)
    bilm = ElmoBiLM.from_files(*tiny_model)
    tokens = long_line.split()
    pieces = bilm.embed_sentences([tokens[0:5], tokens[5:10], tokens[10:12]])
    assert stored["2"].shape == (3, 12, 32)
    # The pieces share batches with the other lines: equal up to float rounding.
    np.testing.assert_allclose(stored["2"], np.concatenate(pieces, axis=1), rtol=1e-5, atol=1e-6)
    assert json.loads(stored["sentence_to_index"][0])[""] == "3"


def test_undecodable_bytes_stop_before_writing_or_are_replaced(tiny_model, tmp_path, capsys):
    source = tmp_path / "corpus.txt"
    source.write_bytes(b"the river\nold city\nthe \xff bank\n")
    out = tmp_path / "out.hdf5"
    assert _embed(source, out, "--weights", _weights(tiny_model)) == 1
    err = capsys.readouterr().err
    assert f"{source}, line 3 (index 2): byte 5 of the line is not valid UTF-8" in err and "--encoding-errors replace" in err
    assert not out.exists() and not out.with_name("out.hdf5.partial").exists()

    assert _embed(source, out, "--weights", _weights(tiny_model), "--encoding-errors", "replace") == 0
    assert "warning: 1 line(s) held bytes that are not UTF-8" in capsys.readouterr().err
    expected = ElmoBiLM.from_files(*tiny_model).embed_sentences([["the", "\ufffd", "bank"]])[0]
    np.testing.assert_allclose(_datasets(out)["2"], expected, rtol=1e-5, atol=1e-6)


def test_shards_cover_the_corpus_and_merge_to_the_single_run(tiny_model, tmp_path):
    lines = _corpus_lines(50, seed=3) + ["", "the river bank", "the river bank"]
    source = _write_lines(tmp_path / "corpus.txt", lines)
    single = tmp_path / "single.hdf5"
    assert _embed(source, single, "--weights", _weights(tiny_model), "--chunk-lines", "8") == 0
    shards = [tmp_path / f"shard{i}.hdf5" for i in range(3)]
    for i, shard in enumerate(shards):
        assert _embed(source, shard, "--weights", _weights(tiny_model), "--chunk-lines", "8", "--shard", f"{i}/3") == 0
        with h5py.File(shard, "r") as h5:
            assert {k for k in h5 if k.isdigit()} == {str(j) for j in range(len(lines)) if j % 3 == i}
    merged = tmp_path / "merged.hdf5"
    assert cli_main(["embed-merge", str(merged), str(shards[2]), str(shards[0]), str(shards[1])]) == 0
    # Other batch neighbours change float rounding only; keys, shapes and sentence_to_index are identical.
    _assert_same_file(single, merged, exact=False)
    with h5py.File(merged, "r") as h5:
        assert json.loads(h5.attrs["spacy_elmo_embed"])["merged_shards"] == 3


def _interrupt_after(monkeypatch, chunks: int) -> None:
    """Make the run die (as a kill would) while writing chunk number ``chunks``."""
    real = embed_run._write_chunk
    calls = []

    def write_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) > chunks:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(embed_run, "_write_chunk", write_chunk)


def test_resume_after_an_interruption_writes_the_uninterrupted_file(tiny_model, tmp_path, monkeypatch):
    source = _write_lines(tmp_path / "corpus.txt", _corpus_lines(60, seed=5) + [""])
    bilm = load_embedding_bilm(_weights(tiny_model))
    settings = EmbedSettings(chunk_lines=8, batch_size=5)
    full = tmp_path / "full.hdf5"
    with pytest.warns(EmbedWarning):
        embed_corpus(source, full, bilm, settings, progress=False)

    out = tmp_path / "out.hdf5"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            embed_corpus(source, out, bilm, settings, progress=False)
    assert not out.exists()
    with pytest.raises(EmbedResumeError, match=r"different batch_size \(5 there, 6 now\).*--force"):
        embed_corpus(source, out, bilm, EmbedSettings(chunk_lines=8, batch_size=6), progress=False)
    with pytest.raises(EmbedResumeError, match=r"different precision \('fp32' there, 'int8' now\).*--force"):
        embed_corpus(source, out, load_embedding_bilm(_weights(tiny_model)).to_precision("int8"), settings, progress=False)
    with pytest.warns(EmbedWarning):
        summary = embed_corpus(source, out, bilm, settings, progress=False)
    assert (summary.n_resumed, summary.n_embedded) == (24, 37)
    assert not out.with_name("out.hdf5.partial").exists()
    _assert_same_file(full, out)
    assert out.read_bytes() == full.read_bytes()


def test_resume_after_sigkill_gives_identical_datasets(tiny_model, tmp_path):
    source = _write_lines(tmp_path / "corpus.txt", _corpus_lines(600, seed=7, longest=30))
    common = ["--weights", _weights(tiny_model), "--chunk-lines", "10", "--batch-size", "4", "--no-progress"]
    full = tmp_path / "full.hdf5"
    assert cli_main(["embed", str(source), str(full), *common]) == 0

    out = tmp_path / "out.hdf5"
    partial = out.with_name("out.hdf5.partial")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "spacy_elmo", "embed", str(source), str(out), *common],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(partial.glob("chunk-*.hdf5"))) < 3:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the run wrote no chunks in 2 minutes"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
        process.stderr.close()
    done = len(list(partial.glob("chunk-*.hdf5")))
    assert 3 <= done < 60, "the kill came too late to test anything"
    assert not out.exists()

    assert cli_main(["embed", str(source), str(out), *common]) == 0
    assert not partial.exists() and not list(tmp_path.glob(".*tmp-*"))
    _assert_same_file(full, out)


def test_existing_output_is_kept_without_force(tiny_model, tmp_path, capsys):
    source = _write_lines(tmp_path / "corpus.txt", ["the river", "a bank"])
    out = tmp_path / "out.hdf5"
    out.write_bytes(b"precious")
    assert _embed(source, out, "--weights", _weights(tiny_model)) == 1
    assert "already exists. Pass --force" in capsys.readouterr().err and out.read_bytes() == b"precious"
    assert _embed(source, out, "--weights", _weights(tiny_model), "--force") == 0
    assert sorted(_datasets(out)) == ["0", "1", "sentence_to_index"]


def test_leftovers_of_a_killed_run_are_cleaned_and_a_second_run_is_locked_out(tiny_model, tmp_path):
    source = _write_lines(tmp_path / "corpus.txt", ["the river", "a bank"])
    out = tmp_path / "out.hdf5"
    orphan = tmp_path / ".out.hdf5.tmp-0123456789ab"
    other = tmp_path / ".other.hdf5.tmp-0123456789ab"
    orphan.write_bytes(b"half")
    other.write_bytes(b"someone else's")
    bilm = load_embedding_bilm(_weights(tiny_model))
    with PartialRun(out), pytest.raises(Exception, match="Another embed run is writing"):
        embed_corpus(source, out, bilm, progress=False)
    embed_corpus(source, out, bilm, progress=False)
    assert not orphan.exists() and other.exists() and out.is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--shard", "3/2"], "--shard 3/2: need N >= 1 and 0 <= I < N"),
        (["--shard", "one/two"], "--shard 'one/two': expected I/N"),
        (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
        (["--max-piece-length", "-1"], "--max-piece-length must be a positive integer"),
        (["--weights", "no-such-model"], "Unknown ELMo model 'no-such-model'"),
        (["--spacy-tokenizer", "zz-not-a-language"], "--spacy-tokenizer 'zz-not-a-language'"),
    ],
)
def test_bad_options_name_the_option(tiny_model, tmp_path, capsys, args, message):
    source = _write_lines(tmp_path / "corpus.txt", ["the river"])
    weights = [] if "--weights" in args else ["--weights", _weights(tiny_model)]
    assert _embed(source, tmp_path / "out.hdf5", *weights, *args) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.hdf5").exists()


def test_missing_input_and_output_directory(tiny_model, tmp_path, capsys):
    assert _embed(tmp_path / "missing.txt", tmp_path / "out.hdf5", "--weights", _weights(tiny_model)) == 1
    assert "Input file not found" in capsys.readouterr().err
    source = _write_lines(tmp_path / "corpus.txt", ["the river"])
    assert _embed(source, tmp_path / "no" / "out.hdf5", "--weights", _weights(tiny_model)) == 1
    assert "does not exist; create it first" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_gpu_id_without_cuda(tiny_model, tmp_path, capsys):
    source = _write_lines(tmp_path / "corpus.txt", ["the river"])
    assert _embed(source, tmp_path / "out.hdf5", "--weights", _weights(tiny_model), "--gpu-id", "0") == 1
    assert "--gpu-id 0: CUDA is not available" in capsys.readouterr().err


def _shard_files(tiny_model, tmp_path, lines, count, **settings):
    source = _write_lines(tmp_path / "corpus.txt", lines)
    bilm = load_embedding_bilm(_weights(tiny_model))
    paths = []
    for i in range(count):
        path = tmp_path / f"shard{i}-of-{count}.hdf5"
        embed_corpus(source, path, bilm, EmbedSettings(shard=Shard(i, count), **settings), progress=False)
        paths.append(path)
    return paths


def test_merge_refuses_incomplete_overlapping_or_foreign_shards(tiny_model, tmp_path, capsys):
    lines = _corpus_lines(10)
    shards = _shard_files(tiny_model, tmp_path, lines, 2)
    out = tmp_path / "merged.hdf5"

    def merge(*paths, force=False):
        code = cli_main(["embed-merge", str(out), *map(str, paths), *(["--force"] if force else [])])
        return code, capsys.readouterr().err

    code, err = merge(shards[0])
    assert code == 1 and "Shard(s) 1/2 missing: 1 of 2 shard files given" in err
    assert "Shard 0/2 is given twice" in merge(shards[0], shards[0], shards[1])[1]
    top = tmp_path / "top"
    top.mkdir()
    (foreign,) = _shard_files(tiny_model, top, lines, 2, output_format="top")[1:]
    assert "are not shards of one run: their output_format differs" in merge(shards[0], foreign)[1]
    broken = tmp_path / "broken.hdf5"
    broken.write_bytes(shards[1].read_bytes())
    with h5py.File(broken, "a") as h5:
        del h5["3"]
    assert "does not hold exactly its lines i < 10 with i % 2 == 1: 1 missing (e.g. [3])" in merge(shards[0], broken)[1]
    unfinished = tmp_path / "unfinished.hdf5"
    (tmp_path / "unfinished.hdf5.partial").mkdir()
    assert "is not finished" in merge(shards[0], unfinished)[1]
    plain = tmp_path / "plain.hdf5"
    with h5py.File(plain, "w") as h5:
        h5["0"] = np.zeros((3, 1, 32), np.float32)
    assert "was not written by spacy-elmo's embed command" in merge(plain, shards[1])[1]
    assert not out.exists()
    assert merge(*shards)[0] == 0
    assert "already exists" in merge(*shards)[1]
    assert merge(*shards, force=True)[0] == 0


def test_the_cli_help_reads_each_default_from_its_one_home():
    """--batch-size, --chunk-lines and --max-piece-length default to EmbedSettings, whose piece
    length is the elmo component's; --weights lists the published models the code knows."""
    import inspect

    from spacy_elmo.bilm.batching import DEFAULT_MAX_PIECE_LENGTH
    from spacy_elmo.bilm.pretrained import PUBLISHED_MODELS
    from spacy_elmo.embed.cli import build_embed_parser
    from spacy_elmo.pipeline.architectures import ElmoBiLM_v1

    parser = build_embed_parser("embed")
    args = parser.parse_args(["in.txt", "out.hdf5"])
    settings = EmbedSettings()
    assert (args.batch_size, args.chunk_lines, args.max_piece_length) == (
        settings.batch_size,
        settings.chunk_lines,
        settings.max_piece_length,
    )
    assert settings.max_piece_length == DEFAULT_MAX_PIECE_LENGTH
    assert inspect.signature(ElmoBiLM_v1).parameters["max_piece_length"].default == DEFAULT_MAX_PIECE_LENGTH
    weights_help = " ".join(next(a.help for a in parser._actions if a.dest == "weights").split())
    assert all(name in weights_help for name in PUBLISHED_MODELS)
