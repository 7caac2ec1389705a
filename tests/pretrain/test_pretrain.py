"""biLM pretraining: learning, exact resume, export, fine-tuning schedule, DDP, and its errors."""

import gzip
import itertools
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain_helpers import cli_args, one_thread_env, pretrain_command, synthetic_sentences, tiny_config, write_lines
from spacy_elmo import ElmoBiLM
from spacy_elmo.__main__ import main as cli_main
from spacy_elmo.bilm.options import ElmoOptions
from spacy_elmo.bilm.weights_io import read_weights
from spacy_elmo.pretrain import CheckpointError, OutputDirError, PretrainConfigError, TrainingDivergedError, load_config, pretrain
from spacy_elmo.pretrain.data import BatchStream, SentenceReader, make_batch
from spacy_elmo.pretrain.objective import SampledSoftmax
from spacy_elmo.pretrain.vocab import LmVocab

REPO = Path(__file__).resolve().parents[2]

TINY_CONFIG = tiny_config(
    {
        "learn_rate": 0.003,
        "batch_tokens": 512,
        "max_steps": 10,
        "log_every": 1,
        "eval_every": 1000,
        "checkpoint_every": 1000,
        "softmax": "sampled",
        "n_samples": 64,
    }
)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A config with a tiny architecture plus synthetic train/dev files (one sentence per line)."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "tiny.cfg").write_text(TINY_CONFIG, encoding="utf-8")
    write_lines(folder / "train.txt.gz", synthetic_sentences(300, seed=1))
    write_lines(folder / "dev.txt", synthetic_sentences(60, seed=2))
    return folder


def _overrides(corpus, **extra):
    values = {"paths.train": str(corpus / "train.txt.gz"), "paths.dev": str(corpus / "dev.txt")}
    values.update({key.replace("__", "."): value for key, value in extra.items()})
    return values


def _log(path: Path, event: str):
    return [record for record in map(json.loads, (path / "log.jsonl").read_text().splitlines()) if record["event"] == event]


@pytest.fixture(scope="module")
def wiki_run(shared, tmp_path_factory):
    """A few hundred steps on 300 Wikipedia paragraphs (format 'paragraphs': spaCy tokenizer + sentencizer)."""
    folder = tmp_path_factory.mktemp("wiki")
    with gzip.open(shared / "data" / "lm" / "wiki2014-en" / "valid.txt.gz", "rt", encoding="utf-8") as handle:
        lines = [line for line in itertools.islice(handle, 400) if line.strip()]
    (folder / "train.txt").write_text("".join(lines[:300]), encoding="utf-8")
    (folder / "dev.txt").write_text("".join(lines[300:340]), encoding="utf-8")
    (folder / "tiny.cfg").write_text(TINY_CONFIG, encoding="utf-8")
    overrides = {
        "paths.train": str(folder / "train.txt"),
        "paths.dev": str(folder / "dev.txt"),
        "data.format": "paragraphs",
        "vocab.size": 1000,
        "training.max_steps": 200,
        "training.log_every": 50,
        "training.eval_every": 100,
        "training.softmax": "adaptive",
        "training.adaptive_cutoffs": [100, 400],
    }
    return pretrain(folder / "tiny.cfg", folder / "out", overrides=overrides, progress=False)


@pytest.fixture(scope="module")
def synthetic_run(corpus, tmp_path_factory):
    """The same kind of run on the synthetic corpus: no shared data needed."""
    overrides = _overrides(
        corpus,
        training__max_steps=40,
        training__log_every=10,
        training__eval_every=20,
        training__softmax="adaptive",
        training__adaptive_cutoffs=[10, 30],
    )
    return pretrain(corpus / "tiny.cfg", tmp_path_factory.mktemp("synthetic") / "out", overrides=overrides, progress=False)


RUNS = ["synthetic_run", pytest.param("wiki_run", marks=pytest.mark.slow)]


@pytest.mark.parametrize("run_name", RUNS)
def test_training_lowers_heldout_perplexity(run_name, request):
    run = request.getfixturevalue(run_name)
    steps = json.loads((run.output_dir / "metrics.json").read_text())["steps"]
    assert steps == {"synthetic_run": 40, "wiki_run": 200}[run_name]
    evals = _log(run.output_dir, "eval")
    first, last = evals[0], evals[-1]
    assert first["step"] == 0 and last["step"] == steps
    assert last["dev"]["ppl"] < 0.5 * first["dev"]["ppl"]
    for key in ("ppl_forward", "ppl_backward", "oov_rate"):
        assert key in last["dev"]
    metrics = json.loads((run.output_dir / "metrics.json").read_text())
    assert metrics["tokens"] > 0 and metrics["tokens_per_s"] > 0
    assert metrics["dev"]["ppl"] == pytest.approx(last["dev"]["ppl"])
    assert metrics["best_dev"]["step"] == steps
    vocab = (run.output_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert vocab[:3] == ["<S>", "</S>", "<UNK>"]


@pytest.mark.parametrize("run_name", RUNS)
def test_export_loads_with_identical_outputs(run_name, request):
    run = request.getfixturevalue(run_name)
    trained = run.objective.bilm.eval()
    for name in ("model-last", "model-best"):
        folder = run.output_dir / name
        loaded = ElmoBiLM.from_files(folder / "options.json", folder / "weights.hdf5")
        sentences = [["The", "river", "flows", "north", "."], ["Population", "grew", "in", "1990", "."], ["Hi"]]
        with torch.no_grad():
            expected = trained.embed_sentences(sentences)
            actual = loaded.embed_sentences(sentences)
        for a, b in zip(actual, expected):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("run_name", RUNS)
def test_elmo_component_loads_the_export(run_name, request):
    import spacy

    run = request.getfixturevalue(run_name)
    nlp = spacy.blank("en")
    nlp.add_pipe("elmo", config={"model": {"weights": str(run.output_dir / "model-best")}})
    doc = nlp("The river flows north.")
    assert doc.tensor.shape == (5, 32)


def test_resume_reproduces_the_uninterrupted_loss_curve(corpus, tmp_path):
    config = corpus / "tiny.cfg"
    full = _overrides(corpus, training__max_steps=16, training__checkpoint_every=8)
    assert cli_main(["pretrain", str(config), str(tmp_path / "full"), "--no-progress", *cli_args(full)]) == 0
    first = _overrides(corpus, training__max_steps=8)
    assert cli_main(["pretrain", str(config), str(tmp_path / "split"), "--no-progress", *cli_args(first)]) == 0
    second = _overrides(corpus, training__max_steps=16)
    assert cli_main(["pretrain", str(config), str(tmp_path / "split"), "--resume", "--no-progress", *cli_args(second)]) == 0

    def losses(folder):
        return {r["step"]: r["loss"] for r in _log(folder, "train")}

    uninterrupted, resumed = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert sorted(resumed) == list(range(1, 17))
    # The 300 sentences make about 10 batches, so steps 9..16 also cross an epoch boundary.
    assert max(r["epoch"] for r in _log(tmp_path / "full", "train")) >= 1
    assert [resumed[s] for s in range(9, 17)] == [uninterrupted[s] for s in range(9, 17)]
    assert [r["step"] for r in _log(tmp_path / "split", "resume")] == [8]
    full_weights = read_weights(tmp_path / "full" / "model-last" / "weights.hdf5", _options(tmp_path / "full" / "model-last"))
    split_weights = read_weights(tmp_path / "split" / "model-last" / "weights.hdf5", _options(tmp_path / "split" / "model-last"))
    assert all(np.array_equal(full_weights[k], split_weights[k]) for k in full_weights)


def _options(folder: Path) -> ElmoOptions:
    return ElmoOptions.from_file(folder / "options.json")


def _arrays(folder: Path):
    return read_weights(folder / "weights.hdf5", _options(folder))


def test_finetuning_warms_up_the_softmax_then_unfreezes_gradually(corpus, model_dir, tmp_path):
    original = _arrays(model_dir)
    out = tmp_path / "ft"
    overrides = _overrides(
        corpus,
        training__init_from=str(model_dir),
        training__warmup_softmax_steps=3,
        training__unfreeze="gradual",
        training__unfreeze_interval=2,
        training__layer_lr_decay=0.5,
    )

    def run(steps, resume):
        pretrain(corpus / "tiny.cfg", out, overrides={**overrides, "training.max_steps": steps}, resume=resume, progress=False)
        return _arrays(out / "model-last")

    def changed(arrays):
        groups = {"lstm.1": "Cell1", "lstm.0": "Cell0"}
        result = {}
        for block, cell in groups.items():
            result[block] = any(not np.array_equal(arrays[k], original[k]) for k in arrays if f"/{cell}/" in k)
        result["token_encoder"] = any(not np.array_equal(arrays[k], original[k]) for k in arrays if not k.startswith("RNN"))
        return result

    after_warmup = run(3, resume=False)
    assert all(np.array_equal(after_warmup[k], original[k]) for k in original), "the biLM moved during the softmax warm-up"
    assert changed(run(5, resume=True)) == {"lstm.1": True, "lstm.0": False, "token_encoder": False}
    assert changed(run(7, resume=True)) == {"lstm.1": True, "lstm.0": True, "token_encoder": False}
    assert changed(run(9, resume=True)) == {"lstm.1": True, "lstm.0": True, "token_encoder": True}
    blocks = [(r["step"], r["blocks"]) for r in _log(out, "trainable")]
    assert blocks[0] == (0, ["softmax"])
    assert (7, ["softmax", "lstm.1", "lstm.0", "token_encoder"]) in blocks
    assert _options(out / "model-last") == _options(model_dir)


@pytest.mark.slow
def test_ddp_two_processes_keep_identical_replicas(corpus, tmp_path):
    out = tmp_path / "ddp"
    for steps, extra in ((4, []), (6, ["--resume"])):
        overrides = _overrides(corpus, training__max_steps=steps, training__log_every=1)
        command = pretrain_command(corpus / "tiny.cfg", out, *extra, *cli_args(overrides), processes=2)
        done = subprocess.run(command, env=one_thread_env(), capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        replicas = _log(out, "replicas")[-1]
        assert replicas["step"] == steps and len(replicas["checksums"]) == 2 and replicas["identical"]
    assert [r["step"] for r in _log(out, "train")] == [1, 2, 3, 4, 5, 6]
    # Batch i goes to rank i % 2: 4 two-process steps consume exactly the first 8 batches of the stream.
    config = load_config(corpus / "tiny.cfg", _overrides(corpus))
    vocab = LmVocab.load(out / "vocab.txt")
    stream = BatchStream(
        [corpus / "train.txt.gz"], SentenceReader(config.data), config.training.batch_tokens, config.training.seed
    )
    first_eight = itertools.islice(stream.epoch_batches(0), 8)
    assert _log(out, "train")[3]["tokens"] == sum(make_batch(b, vocab, 50).n_words for b in first_eight)
    assert json.loads((out / "metrics.json").read_text())["processes"] == 2


def test_stream_resumes_at_any_position_and_shards_disjointly(corpus):
    config = load_config(corpus / "tiny.cfg", _overrides(corpus))
    stream = BatchStream([corpus / "train.txt.gz"], SentenceReader(config.data), config.training.batch_tokens, seed=3)
    full = list(itertools.islice(stream.iterate(0, 0), 30))
    assert full[-1][0] >= 1, "expected to cross an epoch boundary"
    epoch, position, _ = full[9]
    assert list(itertools.islice(stream.iterate(epoch, position), 20)) == full[10:]
    shards = [list(itertools.islice(stream.iterate(0, 0, rank, 2), 4)) for rank in range(2)]
    interleaved = [batch for pair in zip(*shards) for batch in (pair[0][2], pair[1][2])]
    assert interleaved == [batch for _, _, batch in full[:8]]
    assert all(len(s) <= config.data.max_sentence_length for _, _, b in full for s in b)


def test_sampled_softmax_full_in_eval_and_log_q_corrected_in_training():
    torch.manual_seed(0)
    n_classes, n_samples = 50, 4000
    softmax = SampledSoftmax(8, n_classes, n_samples)
    hidden, targets = torch.randn(64, 8), torch.randint(0, n_classes, (64,))
    with torch.no_grad():
        full = softmax.eval().loss(hidden, targets)
        logits = hidden @ softmax.weight.t() + softmax.bias
        assert torch.allclose(full, torch.nn.functional.cross_entropy(logits, targets, reduction="none"), atol=1e-5)
        sampled = softmax.train().loss(hidden, targets)
    # Every logit is corrected by -log(n_samples * Q(k)) and hits of the target are removed, so with
    # many samples the loss approaches log(1 + n_samples * Q(target) * (exp(full_loss) - 1)).
    q_target = torch.log1p(1.0 / (targets.double() + 1)) / np.log(n_classes + 1)
    expected = torch.log1p(n_samples * q_target * torch.expm1(full.double()))
    difference = (sampled.double() - expected).abs()
    assert difference.mean() < 0.03 and difference.max() < 0.15
    ids = softmax.sample()
    assert ids.min() >= 0 and ids.max() < n_classes
    assert (ids == 0).float().mean() > (ids == 10).float().mean() > (ids == 40).float().mean()


def test_corrupt_checkpoint_gives_a_clear_error(corpus, tmp_path):
    out = tmp_path / "run"
    pretrain(corpus / "tiny.cfg", out, overrides=_overrides(corpus, training__max_steps=2), progress=False)
    state = out / "checkpoint-2" / "state.pt"
    state.write_bytes(state.read_bytes()[:500])
    with pytest.raises(CheckpointError) as err:
        pretrain(corpus / "tiny.cfg", out, overrides=_overrides(corpus, training__max_steps=4), resume=True, progress=False)
    message = str(err.value)
    assert str(state) in message and "truncated" in message and "--overwrite" in message and "new OUTPUT_DIR" in message
    with pytest.raises(OutputDirError, match="pass --resume to continue"):
        pretrain(corpus / "tiny.cfg", out, overrides=_overrides(corpus), progress=False)
    with pytest.raises(CheckpointError, match="No checkpoint"):
        pretrain(corpus / "tiny.cfg", tmp_path / "empty", overrides=_overrides(corpus), resume=True, progress=False)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(corpus, tmp_path):
    out = tmp_path / "nan"
    overrides = _overrides(
        corpus, training__learn_rate=1e30, training__grad_clip=0, training__checkpoint_every=1, training__max_steps=50
    )
    with pytest.raises(TrainingDivergedError) as err:
        pretrain(corpus / "tiny.cfg", out, overrides=overrides, progress=False)
    message = str(err.value)
    assert "diverged at step" in message and "learn_rate" in message and "grad_clip" in message
    step = int(message.split("diverged at step ")[1].split(":")[0])
    meta = json.loads((out / f"checkpoint-{step - 1}" / "meta.json").read_text())
    assert meta["step"] == step - 1 and f"checkpoint-{step - 1}" in message
    assert _log(out, "diverged")[0]["step"] == step


def test_config_errors_name_the_setting(corpus, tmp_path):
    with pytest.raises(PretrainConfigError, match=r"\[training\] has no key 'max_step'"):
        load_config(corpus / "tiny.cfg", {"training.max_step": 3})
    with pytest.raises(PretrainConfigError, match=r"\[training\] optimizer must be one of"):
        load_config(corpus / "tiny.cfg", {"training.optimizer": "sgd"})
    with pytest.raises(PretrainConfigError, match="no budget"):
        load_config(corpus / "tiny.cfg", {"training.max_steps": None})
    assert cli_main(["pretrain", str(corpus / "tiny.cfg"), str(tmp_path / "x"), "--paths.train", "/nonexistent/*.txt"]) == 1


@pytest.mark.parametrize("name", ["pretrain_tiny.cfg", "pretrain_small.cfg"])
def test_shipped_configs_are_valid(name):
    config = load_config(REPO / "configs" / name, {"paths.train": "train.txt", "paths.dev": "dev.txt"})
    assert config.model is not None and config.paths.train == "train.txt"


def test_training_recurrence_matches_inference(model_dir, tiny_sentences):
    """Autograd and inference run the same arithmetic, blocked differently (docs/design.md §2-3)."""
    from spacy_elmo.pretrain.model import load_for_fine_tuning

    trained = load_for_fine_tuning(model_dir, dropout=0.1).eval()
    reference = ElmoBiLM.from_files(model_dir / "options.json", model_dir / "weights.hdf5", token_cache_size=0)
    sentences = [s for stream in tiny_sentences for s in stream][:12]
    layers, _ = trained.embed_batch(sentences)  # gradients enabled: the stacked recurrence
    with torch.no_grad():
        expected, _ = reference.embed_batch(sentences)
    assert layers.requires_grad
    torch.testing.assert_close(layers.detach(), expected, atol=1e-6, rtol=1e-5)


def test_init_from_takes_model_names_and_names_the_setting_when_unknown(tmp_path):
    from spacy_elmo.pretrain.model import load_for_fine_tuning

    bilm = load_for_fine_tuning("default", dropout=0.1)
    assert bilm.training and bilm.lstm.dropout == 0.1
    with pytest.raises(PretrainConfigError, match=r"\[training\] init_from = .*nor an existing directory"):
        load_for_fine_tuning(tmp_path / "missing", dropout=0.1)
