"""Pretraining under faults: crashes at any file-system step, SIGKILL, Ctrl-C, corrupted or
incomplete checkpoints, a non-empty or wrong OUTPUT_DIR, undecodable text, changed settings."""

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain_helpers import cli_args, one_thread_env, pretrain_command, tiny_config, write_lines
from spacy_elmo.__main__ import main as cli_main
from spacy_elmo.bilm.options import ElmoOptions
from spacy_elmo.bilm.weights_io import read_weights
from spacy_elmo.pretrain import CheckpointError, OutputDirError, PretrainDataError, load_config, pretrain
from spacy_elmo.pretrain import output_dir as output_dir_module
from spacy_elmo.pretrain import progress as progress_module
from spacy_elmo.pretrain import vocab as vocab_module
from spacy_elmo.pretrain.checkpoint import is_checkpoint_folder, load_latest_checkpoint
from spacy_elmo.pretrain.data import SentenceReader
from spacy_elmo.pretrain.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]

TINY_CONFIG = tiny_config(
    {
        "learn_rate": 0.003,
        "batch_tokens": 256,
        "max_steps": 8,
        "log_every": 1,
        "eval_every": 1000,
        "checkpoint_every": 4,
        "softmax": "sampled",
        "n_samples": 32,
    },
    model__lstm={"dim": 16, "projection_dim": 8},
    model__char_cnn={"filters": [[1, 8], [2, 8]]},
)

WORDS = "the a cat dog bird sees likes eats river house garden small red old near at in home".split()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    (folder / "tiny.cfg").write_text(TINY_CONFIG, encoding="utf-8")
    rng = random.Random(7)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + " ." for _ in range(200)]
    write_lines(folder / "train.txt", lines)
    write_lines(folder / "other.txt", reversed(lines))
    return folder


def _overrides(corpus, **extra):
    values = {"paths.train": str(corpus / "train.txt")}
    values.update({key.replace("__", "."): value for key, value in extra.items()})
    return values


def _run(corpus, out, resume=False, overwrite=False, **extra):
    return pretrain(
        corpus / "tiny.cfg", out, overrides=_overrides(corpus, **extra), resume=resume, overwrite=overwrite, progress=False
    )


def _weights(folder: Path):
    return read_weights(folder / "weights.hdf5", ElmoOptions.from_file(folder / "options.json"))


def _same_weights(a: Path, b: Path) -> bool:
    first, second = _weights(a), _weights(b)
    return first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)


def _checkpoint_names(out: Path):
    return sorted((p.name for p in out.iterdir() if p.name.startswith("checkpoint")), key=lambda n: (len(n), n))


def _resumed_from(out: Path):
    return [r["step"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["event"] == "resume"]


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """An uninterrupted run of 8 steps: what every interrupted-and-resumed run must end with."""
    out = tmp_path_factory.mktemp("reference") / "out"
    _run(corpus, out)
    return out


# ---------------------------------------------------------------- OUTPUT_DIR


def test_non_empty_output_dir_is_refused_and_overwrite_keeps_unknown_files(corpus, tmp_path):
    out = tmp_path / "out"
    (out / "model-best").mkdir(parents=True)
    user_files = {
        out / "model-best" / "important.txt": b"my notes",
        out / "vocab.txt": b"my vocabulary",
        out / "config.cfg": b"my config",
        out / "metrics.json": b"{}",
        out / "notes.md": b"keep",
    }
    for path, data in user_files.items():
        path.write_bytes(data)
    with pytest.raises(OutputDirError) as err:
        _run(corpus, out, training__max_steps=2)
    message = str(err.value)
    assert str(out) in message and "not empty" in message and "--overwrite" in message and "new OUTPUT_DIR" in message
    assert all(path.read_bytes() == data for path, data in user_files.items())

    config = str(corpus / "tiny.cfg")
    assert (
        cli_main(
            ["pretrain", config, str(out), "--overwrite", "--no-progress", *cli_args(_overrides(corpus, training__max_steps=2))]
        )
        == 0
    )
    assert (out / "model-best" / "important.txt").read_bytes() == b"my notes"
    assert (out / "notes.md").read_bytes() == b"keep"
    assert (out / "vocab.txt").read_text().split("\n")[:3] == ["<S>", "</S>", "<UNK>"]
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2
    assert (out / "model-best" / "weights.hdf5").is_file() and (out / "model-last" / "options.json").is_file()


def test_output_dir_that_is_a_file_and_contradicting_flags_are_clear_errors(corpus, tmp_path):
    path = tmp_path / "out"
    path.write_text("not a directory")
    with pytest.raises(OutputDirError, match=re.escape(f"OUTPUT_DIR {path} is a file")):
        _run(corpus, path)
    assert cli_main(["pretrain", str(corpus / "tiny.cfg"), str(path), *cli_args(_overrides(corpus))]) == 1
    with pytest.raises(OutputDirError, match="--resume and --overwrite"):
        _run(corpus, tmp_path / "other", resume=True, overwrite=True)


def test_overwrite_discards_the_earlier_runs_checkpoints(corpus, tmp_path):
    out = tmp_path / "out"
    _run(corpus, out, training__checkpoint_every=2, training__max_steps=6)
    assert _checkpoint_names(out) == ["checkpoint-4", "checkpoint-6"]
    _run(corpus, out, overwrite=True, training__checkpoint_every=2, training__max_steps=2)
    assert _checkpoint_names(out) == ["checkpoint-2"]
    _run(corpus, out, resume=True, training__max_steps=3)
    assert _resumed_from(out) == [2]


# ---------------------------------------------------------------- crashes during checkpointing


class Crash(BaseException):
    """The process died: raised by the n-th file-system change, and by every one after it."""


@contextmanager
def crash_during_checkpoints(monkeypatch, n):
    """Within ``Trainer._checkpoint``, the n-th rename/delete crashes the run, and nothing changes the disk afterwards."""
    state = {"armed": False, "count": 0, "dead": False}

    def wrap(function):
        def change(*args, **kwargs):
            if state["dead"]:
                raise Crash
            if state["armed"]:
                state["count"] += 1
                if state["count"] == n:
                    state["dead"] = True
                    raise Crash
            return function(*args, **kwargs)

        return change

    original = Trainer._checkpoint

    def checkpoint(self):
        state["armed"] = True
        try:
            original(self)
        finally:
            state["armed"] = False

    with monkeypatch.context() as patch:
        for name in ("replace", "rename", "unlink", "remove", "rmdir"):
            patch.setattr(os, name, wrap(getattr(os, name)))
        patch.setattr(Trainer, "_checkpoint", checkpoint)
        yield state


@pytest.mark.slow
def test_any_two_crashes_while_checkpointing_keep_a_resumable_checkpoint(corpus, tmp_path, monkeypatch, reference):
    """Crash at every file-system change of one checkpoint, resume, crash at every change of the next:
    a complete checkpoint always remains, and resuming still ends with the uninterrupted run's weights."""
    base = tmp_path / "base"
    _run(corpus, base, training__checkpoint_every=1, training__max_steps=2)
    crashed_points = 0
    for first in range(1, 7):
        after_first = tmp_path / f"after-{first}"
        shutil.copytree(base, after_first)
        with crash_during_checkpoints(monkeypatch, first), pytest.raises(Crash):
            _run(corpus, after_first, resume=True, training__checkpoint_every=1)
        for second in range(1, 7):
            out = tmp_path / f"run-{first}-{second}"
            shutil.copytree(after_first, out)
            with crash_during_checkpoints(monkeypatch, second) as crash:
                try:
                    _run(corpus, out, resume=True, training__checkpoint_every=1)
                except Crash:
                    crashed_points += 1
            assert crash["dead"], "the crash point lies beyond the checkpoint's file-system changes"
            _run(corpus, out, resume=True, training__checkpoint_every=100)
            assert _resumed_from(out)[-1] >= 2, (first, second)
            assert _same_weights(out / "model-last", reference / "model-last"), (first, second)
            folders = [path.name for path in out.iterdir() if is_checkpoint_folder(path)]
            assert len(folders) == 2 and "checkpoint-8" in folders, (first, second, folders)
            shutil.rmtree(out)
    assert crashed_points == 36


def test_orphans_are_removed_and_complete_temporaries_are_used(corpus, tmp_path, reference):
    """A save or a deletion that a crash interrupted can leave the only complete checkpoints
    under .checkpoint-<step>.tmp-* names: resuming uses the newest and gives it its name back."""
    out = tmp_path / "out"
    _run(corpus, out)  # checkpoint-4 and checkpoint-8
    os.rename(out / "checkpoint-4", out / ".checkpoint-4.tmp-0123456789ab")
    os.rename(out / "checkpoint-8", out / ".checkpoint-8.tmp-ba9876543210")
    (out / ".checkpoint-9.tmp-00aa00aa00aa").mkdir()  # a save killed while writing state.pt
    (out / ".checkpoint-9.tmp-00aa00aa00aa" / "state.pt").write_bytes(b"partial")
    (out / ".model-best.tmp-feedfeedfeed").mkdir()
    (out / ".model-best.tmp-feedfeedfeed" / "options.json").write_text("{}")
    (out / ".vocab.txt.tmp-0123456789ab").write_text("partial")
    _run(corpus, out, resume=True, training__max_steps=9)
    assert _resumed_from(out) == [8]
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]
    assert _checkpoint_names(out) == ["checkpoint-8", "checkpoint-9"]


def test_a_checkpoint_without_checksums_or_run_settings_is_refused(corpus, tmp_path):
    """Every checkpoint records the sha256 of its state.pt and its run settings; one without
    them is not resumed from unchecked."""
    out = tmp_path / "out"
    _run(corpus, out, training__max_steps=4)
    meta_path = out / "checkpoint-4" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({key: value for key, value in meta.items() if key != "files"}))
    with pytest.raises(CheckpointError) as err:
        _run(corpus, out, resume=True, training__max_steps=8)
    assert str(meta_path) in str(err.value) and "sha256" in str(err.value) and "--overwrite" in str(err.value)
    meta_path.write_text(json.dumps({key: value for key, value in meta.items() if key != "run"}))
    with pytest.raises(CheckpointError) as err:
        _run(corpus, out, resume=True, training__max_steps=8)
    assert str(meta_path) in str(err.value) and '"run"' in str(err.value) and "--overwrite" in str(err.value)


# ---------------------------------------------------------------- integrity


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for index in range(middle, middle + 8):
        data[index] ^= 0xFF
    path.write_bytes(bytes(data))


def _rewrite_state(checkpoint: Path, change) -> None:
    """Change a checkpoint's state.pt and record its new size and sha256, as a writer with a bug
    would: the checksum passes, so what is tested is the check of the parts themselves."""
    state_path = checkpoint / "state.pt"
    state = torch.load(state_path, weights_only=True)
    change(state)
    torch.save(state, state_path)
    meta_path = checkpoint / "meta.json"
    meta = json.loads(meta_path.read_text())
    digest = hashlib.sha256(state_path.read_bytes()).hexdigest()
    meta["files"]["state.pt"] = {"bytes": state_path.stat().st_size, "sha256": digest}
    meta_path.write_text(json.dumps(meta))


STATE_DAMAGE = {
    "no trainer": (lambda state: state.pop("trainer"), "missing trainer"),
    "trainer not a dict": (lambda state: state.update(trainer=[4, 1024]), "trainer is list"),
    "no tokens counter": (lambda state: state["trainer"].pop("tokens"), '"trainer" has no tokens'),
    "tokens a string": (lambda state: state["trainer"].update(tokens="1024"), "tokens is '1024', not an integer"),
    "unknown counter": (lambda state: state["trainer"].update(steps=4), "unknown counter 'steps'"),
    "no vocab_size": (lambda state: state.pop("vocab_size"), "missing vocab_size"),
    "world_size a float": (lambda state: state.update(world_size=1.0), "world_size is float, not int"),
}


@pytest.mark.parametrize("damage", list(STATE_DAMAGE))
def test_a_checkpoint_with_a_missing_or_mistyped_part_is_a_clear_error(corpus, tmp_path, damage):
    """Each part of state.pt that resuming reads is checked first: a missing or mistyped one is
    a CheckpointError naming the checkpoint, the part and the fix, not a KeyError or a run
    continued with wrong counters."""
    out = tmp_path / "out"
    _run(corpus, out, training__max_steps=4)
    change, expected = STATE_DAMAGE[damage]
    _rewrite_state(out / "checkpoint-4", change)
    with pytest.raises(CheckpointError) as err:
        _run(corpus, out, resume=True, training__max_steps=8)
    message = str(err.value)
    assert str(out / "checkpoint-4" / "state.pt") in message and expected in message
    assert "--overwrite" in message and "new OUTPUT_DIR" in message


def test_a_replaced_vocabulary_is_a_clear_error(corpus, tmp_path):
    out = tmp_path / "out"
    _run(corpus, out, training__max_steps=4)
    vocab = out / "vocab.txt"
    vocab.write_text("".join(vocab.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(CheckpointError) as err:
        _run(corpus, out, resume=True, training__max_steps=8)
    message = str(err.value)
    assert str(vocab) in message and str(out / "checkpoint-4") in message and "vocabulary of" in message


def test_a_corrupted_checkpoint_falls_back_to_the_previous_one(corpus, tmp_path, reference, capsys):
    out = tmp_path / "out"
    _run(corpus, out)
    _flip_bytes(out / "checkpoint-8" / "state.pt")
    capsys.readouterr()
    _run(corpus, out, resume=True)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and "checkpoint-8" in warnings[0] and "sha256" in warnings[0] and "checkpoint-4" in warnings[0]
    assert _resumed_from(out) == [4]
    assert _same_weights(out / "model-last", reference / "model-last")
    assert _checkpoint_names(out) == ["checkpoint-4", "checkpoint-8"]
    assert load_latest_checkpoint(out).skipped == []

    for step in (4, 8):
        _flip_bytes(out / f"checkpoint-{step}" / "state.pt")
    with pytest.raises(CheckpointError) as err:
        _run(corpus, out, resume=True)
    message = str(err.value)
    assert str(out / "checkpoint-8" / "state.pt") in message and str(out / "checkpoint-4" / "state.pt") in message
    assert "--overwrite" in message


# ---------------------------------------------------------------- changed settings, undecodable text


def test_resuming_with_another_data_stream_is_refused(corpus, tmp_path):
    out = tmp_path / "out"
    _run(corpus, out, training__max_steps=2)
    with pytest.raises(CheckpointError) as err:
        pretrain(corpus / "tiny.cfg", out, overrides={"paths.train": str(corpus / "other.txt")}, resume=True, progress=False)
    message = str(err.value)
    assert "[paths] train" in message and "other.txt" in message and "train.txt" in message
    assert "new OUTPUT_DIR" in message and "--training.init_from" in message and "checkpoint-2" in message
    with pytest.raises(CheckpointError, match=r"\[data\] max_sentence_length is 20 now and was 30"):
        _run(corpus, out, resume=True, data__max_sentence_length=20)
    _run(corpus, out, resume=True, training__max_steps=3, training__learn_rate=0.001)  # an optimiser setting may change
    assert _resumed_from(out) == [2]


def test_undecodable_lines_warn_once_and_mostly_binary_files_are_refused(corpus, tmp_path, capsys):
    latin1 = tmp_path / "latin1.txt"
    lines = ["the cafe is near the river ."] * 60 + ["le café est près de la rivière ."] * 20
    latin1.write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    config = load_config(corpus / "tiny.cfg", {"paths.train": str(latin1)})
    messages = []
    reader = SentenceReader(config.data, warn=messages.append)
    for _ in range(2):
        sentences = list(reader.sentences([latin1]))
    assert len(sentences) == 80 and "caf\ufffd" in sentences[-1]
    assert len(messages) == 1 and str(latin1) in messages[0] and "20 of 80 lines" in messages[0] and "iconv" in messages[0]

    _run(corpus, tmp_path / "out", paths__train=str(latin1), training__max_steps=12)
    assert capsys.readouterr().err.count("are not valid UTF-8") == 1

    binary = tmp_path / "data.bin"
    binary.write_bytes(bytes(random.Random(0).getrandbits(8) for _ in range(30000)))
    with pytest.raises(PretrainDataError) as err:
        list(SentenceReader(config.data).sentences([binary]))
    assert str(binary) in str(err.value) and "not UTF-8" in str(err.value) and "[paths] train" in str(err.value)


@pytest.mark.parametrize("setting", ["train", "dev", "test"])
def test_a_path_that_matches_no_file_names_its_setting(corpus, tmp_path, setting):
    missing = str(tmp_path / "no-such-*.txt")
    with pytest.raises(PretrainDataError) as err:
        _run(corpus, tmp_path / "out", **{f"paths__{setting}": missing})
    assert f"[paths] {setting}: {missing!r} matches no file" in str(err.value)
    assert f"--paths.{setting} PATH" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_folders_and_empty_lists_are_not_files(corpus, tmp_path):
    (tmp_path / "shard-1").mkdir()
    for spec, said in ((str(tmp_path / "shard-*"), "matches no file"), (" , ", "names no file")):
        with pytest.raises(PretrainDataError) as err:
            _run(corpus, tmp_path / "out", paths__dev=spec)
        assert f"[paths] dev: {spec!r} {said}" in str(err.value)
    write_lines(tmp_path / "shard-2.txt", ["the cat sees the dog ."] * 20)
    _run(corpus, tmp_path / "out", paths__dev=str(tmp_path / "shard-*"), training__max_steps=1)
    assert (tmp_path / "out" / "model-last").is_dir()


# ---------------------------------------------------------------- Ctrl-C


def test_ctrl_c_stops_after_the_step_with_a_checkpoint(corpus, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    overrides = _overrides(corpus, training__max_steps=100000, training__checkpoint_every=100000)

    real_write = progress_module.RunLog.write

    def press_ctrl_c_after_step_3(log, event, **fields):
        real_write(log, event, **fields)
        if event == "train" and fields.get("step") == 3:
            os.kill(os.getpid(), signal.SIGINT)  # from the main thread, while the trainer's handler is in place

    monkeypatch.setattr(progress_module.RunLog, "write", press_ctrl_c_after_step_3)
    assert (
        cli_main(["pretrain", str(corpus / "tiny.cfg"), str(out), "--no-progress", "--return-memory", *cli_args(overrides)])
        == 130
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("interrupted: stopped by Ctrl-C after step") and "--resume" in last
    step = int(re.search(r"after step ([\d,]+)", last).group(1).replace(",", ""))
    assert max(_logged_steps(out)) == step and _checkpoint_names(out) == [f"checkpoint-{step}"]
    _run(corpus, out, resume=True, training__max_steps=step + 1)
    assert _resumed_from(out) == [step]


@pytest.mark.slow
@pytest.mark.parametrize("signum,name", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_ctrl_c_or_sigterm_in_a_real_process_saves_a_checkpoint_and_exits_130(corpus, tmp_path, signum, name):
    out = tmp_path / "out"
    overrides = _overrides(corpus, training__max_steps=100000, training__checkpoint_every=100000)
    command = pretrain_command(corpus / "tiny.cfg", out, "--threads", "1", *cli_args(overrides))
    process = subprocess.Popen(command, env=one_thread_env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _logged_steps(out) or max(_logged_steps(out)) < 3:
            assert process.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.05)
        os.kill(process.pid, signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: stopped by {name} after step") and "--resume" in last
    step = int(re.search(r"after step ([\d,]+)", last).group(1).replace(",", ""))
    assert max(_logged_steps(out)) == step and _checkpoint_names(out) == [f"checkpoint-{step}"]
    assert load_latest_checkpoint(out).counters.step == step


def _logged_steps(out: Path):
    try:
        text = (out / "log.jsonl").read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line)["step"] for line in text.splitlines() if line.endswith("}") and '"train"' in line]


SECOND_CTRL_C = """
import os, signal, time
from spacy_elmo.pretrain.interrupt import StopRequest
calls = []
before = signal.getsignal(signal.SIGINT)
with StopRequest(lambda: calls.append("first")) as stop:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)
    assert stop.requested and calls == ["first"]
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        raise SystemExit("the second Ctrl-C did not abort")
    except KeyboardInterrupt:
        pass
assert signal.getsignal(signal.SIGINT) is before
print("ok")
"""


def test_a_second_ctrl_c_aborts_at_once(monkeypatch, capsys):
    """In a child process: a signal sent to the test process itself could end the whole run."""
    done = subprocess.run([sys.executable, "-c", SECOND_CTRL_C], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr

    def abort(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("spacy_elmo.pretrain.trainer.pretrain", abort)
    assert (
        cli_main(["pretrain", str(REPO / "configs" / "pretrain_tiny.cfg"), "unused", "--return-memory", "--paths.train", "x"])
        == 130
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aborted by a second Ctrl-C or SIGTERM")


# ---------------------------------------------------------------- SIGKILL at random moments

FORK_SERVER = r"""
import json, os, sys, traceback
import torch
torch.set_num_threads(1)
import torch._dynamo  # torch.optim imports it on first use (seconds): once here, not in every fork
import h5py
import spacy_elmo.pretrain.trainer
from spacy_elmo.__main__ import main
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(log, 1)
        os.dup2(log, 2)
        try:
            code = main(request["argv"])
        except BaseException:
            traceback.print_exc()
            code = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"killed": os.WIFSIGNALED(status), "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}), flush=True)
"""


class ForkServer:
    """Runs ``python -m spacy_elmo`` commands as forks of one process that has imported torch already:
    each command is a separate process (to kill with SIGKILL) that starts in milliseconds."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=one_thread_env()
        )
        assert json.loads(self.process.stdout.readline())["ready"]
        self.runs = 0

    def run(self, argv, kill_after=None):
        """(exit code or None if killed, seconds it ran, its stderr)."""
        self.runs += 1
        log = self.folder / f"run-{self.runs}.log"
        self.process.stdin.write(json.dumps({"argv": argv, "log": str(log)}) + "\n")
        self.process.stdin.flush()
        started = time.monotonic()
        pid = json.loads(self.process.stdout.readline())["pid"]
        if kill_after is not None:
            time.sleep(kill_after)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        result = json.loads(self.process.stdout.readline())
        return (None if result["killed"] else result["code"]), time.monotonic() - started, log.read_text()

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.mark.slow
def test_sigkill_at_random_moments_always_resumes_from_the_last_good_checkpoint(corpus, tmp_path):
    total = 40
    server = ForkServer(tmp_path)
    try:
        base = ["pretrain", str(corpus / "tiny.cfg")]
        settings = cli_args(_overrides(corpus, training__max_steps=total, training__checkpoint_every=1))
        code, whole_run, _ = server.run(base + [str(tmp_path / "uninterrupted"), "--no-progress", *settings])
        assert code == 0
        out = tmp_path / "killed"
        code, two_steps, _ = server.run(base + [str(out), "--no-progress", *settings, "--training.max_steps", "2"])
        assert code == 0
        # Kill anywhere from the start of a run to about 3 steps in: during setup, steps, checkpoints, pruning.
        step = max(0.0, whole_run - two_steps) / (total - 2)
        window = max(0.0, two_steps - 2 * step) + 3 * step
        rng = random.Random(20240601)
        kills, last_good = 0, 2
        for attempt in range(40):  # noqa: B007 -- the count is reported after the loop
            # Each run stops 4 steps on at most, so the kills spread over the whole run however fast it goes.
            target = str(min(total, last_good + 4))
            argv = base + [str(out), "--resume", "--no-progress", *settings, "--training.max_steps", target]
            code, _, stderr = server.run(argv, kill_after=rng.uniform(0, window))
            assert "Traceback" not in stderr and "warning" not in stderr, stderr
            resumed = re.findall(r"resumed from \S+ at step (\d+)", stderr)
            assert resumed in ([], [str(last_good)]), (resumed, last_good)
            assert code in (None, 0), stderr
            kills += code is None
            latest = load_latest_checkpoint(out)
            assert latest.skipped == [] and latest.counters.step >= last_good
            last_good = latest.counters.step
            if kills >= 10:
                break
        assert kills >= 10, f"only {kills} of {attempt + 1} runs were killed"
        code, _, stderr = server.run(base + [str(out), "--resume", "--no-progress", *settings])
        assert code == 0, stderr
    finally:
        server.close()
    assert json.loads((out / "metrics.json").read_text())["steps"] == total
    assert _same_weights(out / "model-last", tmp_path / "uninterrupted" / "model-last")
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]
    assert len(_checkpoint_names(out)) == 2


def _no_space_left(path, text):
    """``write_text_atomic`` on a full disk."""
    raise OSError(28, "No space left on device")


def test_a_full_disk_while_writing_the_vocabulary_says_to_start_again(corpus, tmp_path, monkeypatch):
    out = tmp_path / "out"

    monkeypatch.setattr(vocab_module, "write_text_atomic", _no_space_left)
    with pytest.raises(OutputDirError) as err:
        _run(corpus, out)
    message = str(err.value)
    assert f"Cannot write {out / 'vocab.txt'}: No space left on device" in message
    assert "no checkpoint was written yet: start again with --overwrite" in message
    monkeypatch.undo()
    _run(corpus, out, overwrite=True)
    assert _checkpoint_names(out) == ["checkpoint-4", "checkpoint-8"]


def test_a_full_disk_when_resuming_says_to_resume_again_not_to_move(corpus, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _run(corpus, out, training__max_steps=4)

    monkeypatch.setattr(output_dir_module, "write_text_atomic", _no_space_left)
    with pytest.raises(OutputDirError) as err:
        _run(corpus, out, resume=True)
    assert "No space left on device" in str(err.value) and "resume again with --resume" in str(err.value)
    assert "another directory" not in str(err.value)
    assert _checkpoint_names(out) == ["checkpoint-4"]
    with pytest.raises(OutputDirError) as err:
        _run(corpus, tmp_path / "fresh")
    assert "or pass another directory" in str(err.value)
    monkeypatch.undo()
    _run(corpus, out, resume=True)
    assert _resumed_from(out) == [4] and _checkpoint_names(out) == ["checkpoint-4", "checkpoint-8"]


def test_a_full_disk_while_logging_names_the_log_and_the_checkpoint_to_resume_from(corpus, tmp_path, monkeypatch, reference):
    out = tmp_path / "out"
    appends = []

    def open_filling_up(path, mode="r", *args, **kwargs):
        if mode == "a":
            appends.append(path)
            if len(appends) > 6:
                raise OSError(28, "No space left on device")
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(progress_module, "open", open_filling_up, raising=False)
    with pytest.raises(OutputDirError) as err:
        _run(corpus, out)
    message = str(err.value)
    assert f"Cannot write {out / 'log.jsonl'}: No space left on device" in message
    assert f"the newest complete checkpoint, {out / 'checkpoint-4'}, is intact: continue with --resume" in message
    monkeypatch.undo()
    _run(corpus, out, resume=True)
    assert _resumed_from(out) == [4]
    for name, array in _weights(reference / "model-last").items():
        np.testing.assert_array_equal(array, _weights(out / "model-last")[name], err_msg=name)


def test_a_full_disk_while_checkpointing_names_the_folder_and_keeps_the_last_checkpoint(corpus, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _run(corpus, out, training__max_steps=4)
    real_save = torch.save

    def disk_full(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OutputDirError) as err:
        _run(corpus, out, resume=True)
    message = str(err.value)
    assert str(out / "checkpoint-8") in message and "No space left on device" in message and "--resume" in message
    assert str(out / "checkpoint-4") in message
    assert _checkpoint_names(out) == ["checkpoint-4"] and not [p.name for p in out.iterdir() if ".tmp-" in p.name]
    monkeypatch.setattr(torch, "save", real_save)
    _run(corpus, out, resume=True)
    assert _resumed_from(out) == [4, 4]


def test_torch_failing_to_write_a_later_checkpoint_is_a_clear_error(corpus, tmp_path, monkeypatch):
    """torch.save reports a failed write as a RuntimeError ('enforce fail at inline_container.cc');
    it is the same OutputDirError as a full disk, naming the folder and the checkpoint to resume from."""
    out = tmp_path / "out"
    _run(corpus, out, training__max_steps=4)

    def enforce_fail(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", enforce_fail)
    with pytest.raises(OutputDirError) as err:
        _run(corpus, out, resume=True)
    message = str(err.value)
    assert str(out / "checkpoint-8") in message and "is the disk full?" in message and "inline_container" in message
    assert str(out / "checkpoint-4") in message and "--resume" in message


def test_resuming_with_another_optimizer_names_it(corpus, tmp_path):
    out = tmp_path / "out"
    _run(corpus, out, training__max_steps=4)
    with pytest.raises(CheckpointError, match=r"trained with \[training\] optimizer = 'adam' and the config now says 'adagrad'"):
        _run(corpus, out, resume=True, training__optimizer="adagrad")
    _run(corpus, out, resume=True, training__max_steps=5)
    assert _resumed_from(out) == [4]


STOP_DURING_SETUP = """
import os, signal, sys
from spacy_elmo.pretrain import cli, trainer

def setup_then_signal(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would, while the data and vocabulary load
    raise AssertionError("the signal did not stop the setup")

trainer.pretrain = setup_then_signal
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("resume", [False, True])
def test_sigterm_before_the_first_step_exits_130_with_one_line(corpus, tmp_path, resume):
    """A stop during setup used to end the process with the default SIGTERM status (143) and no message."""
    args = [str(corpus / "tiny.cfg"), str(tmp_path / "out"), "--paths.train", str(corpus / "train.txt")]
    if resume:
        args.append("--resume")
    result = subprocess.run(
        [sys.executable, "-c", STOP_DURING_SETUP, *args], env=one_thread_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 130, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted: stopped by SIGTERM outside a training step")
    assert ("run the same command again to continue" in lines[0]) == resume
    assert ("--overwrite" in lines[0]) != resume


WORKER_WITH_TEARDOWN_MARK = """
import atexit, sys
from spacy_elmo.pretrain import cli

atexit.register(lambda: print("python teardown ran", file=sys.stderr))
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("under_torchrun", [False, True])
def test_a_torchrun_worker_ends_with_its_code_and_skips_python_teardown(tmp_path, under_torchrun):
    """Gloo's threads can abort Python's teardown after a finished run (SIGABRT, a 'failed' torchrun
    run): a worker leaves with its exit code and its messages flushed, before that teardown."""
    env = one_thread_env()
    if under_torchrun:
        env.update(WORLD_SIZE="2", RANK="1", LOCAL_RANK="1")
    args = [str(tmp_path / "missing.cfg"), str(tmp_path / "out")]
    result = subprocess.run(
        [sys.executable, "-c", WORKER_WITH_TEARDOWN_MARK, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error:") and "missing.cfg" in result.stderr
    assert ("python teardown ran" in result.stderr) != under_torchrun
