"""Pretraining in bf16 ([training] precision): it trains, stays close to fp32, and resumes fp32 checkpoints."""

import json
import random

import pytest
import torch

from conftest import tiny_options
from pretrain_helpers import tiny_config
from spacy_elmo.bilm.options import ElmoOptions
from spacy_elmo.chars import PADDING_ID, encode_tokens
from spacy_elmo.pretrain import PretrainConfigError, load_config, pretrain
from spacy_elmo.pretrain.data import make_batch
from spacy_elmo.pretrain.model import build_bilm
from spacy_elmo.pretrain.objective import BiLMObjective, build_softmax
from spacy_elmo.pretrain.vocab import LmVocab

OPTIONS = tiny_options()
OPTIONS["char_cnn"]["filters"] = [[1, 8], [2, 8], [3, 16]]  # as in CONFIG's [model.char_cnn]
WORDS = "the a cat dog sees likes river bread house garden morning friend teacher old red small .".split()

CONFIG = tiny_config(
    {
        "batch_tokens": 256,
        "max_steps": 4,
        "log_every": 1,
        "checkpoint_every": 4,
        "softmax": "adaptive",
        "adaptive_cutoffs": [10, 20],
    },
    data={"shuffle_buffer": 50, "sort_pool": 50},
    vocab={"size": 40},
)
pytestmark = pytest.mark.usefixtures("one_thread")


def _sentences(n, seed):
    rng = random.Random(seed)
    return [[rng.choice(WORDS) for _ in range(rng.randint(3, 12))] for _ in range(n)]


def _train(precision, batches, vocab, steps):
    torch.manual_seed(0)
    options = ElmoOptions.from_dict(OPTIONS, source="test")
    softmax = build_softmax("adaptive", 16, len(vocab), 0, [10, 20], 4.0)
    objective = BiLMObjective(build_bilm(options, 0.0), softmax, 0.0, precision)
    optimizer = torch.optim.Adam(objective.parameters(), lr=3e-3)
    losses = []
    for step in range(steps):
        output = objective(batches[step % len(batches)])
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    return objective, losses


def test_bf16_training_is_finite_close_to_fp32_and_keeps_float32_weights():
    sentences = _sentences(60, seed=1)
    vocab = LmVocab.build(sentences, 40, 1, 10_000)
    batches = [make_batch(sentences[i : i + 20], vocab, 50) for i in range(0, 60, 20)]
    fp32, fp32_losses = _train("fp32", batches, vocab, steps=12)
    bf16, bf16_losses = _train("bf16", batches, vocab, steps=12)
    assert all(torch.isfinite(torch.tensor(bf16_losses)))
    assert bf16_losses[-1] < bf16_losses[0] - 0.3  # it learns
    for a, b in zip(fp32_losses, bf16_losses):
        assert abs(a - b) < 0.02 * a
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in bf16.parameters())
    # Held-out evaluation is float32 whatever the training precision: identical weights give identical sums.
    bf16.load_state_dict(fp32.state_dict())
    assert torch.equal(bf16.evaluation_sums(batches), fp32.evaluation_sums(batches))


@pytest.mark.parametrize("pool", ["one matmul", "lookup"])
def test_char_cnn_shortcuts_match_the_convolutions_also_when_the_cut_reaches_the_last_character(pool):
    """Training under autocast pools with one matmul, inference without gradients by table lookup."""
    torch.manual_seed(0)
    encoder = build_bilm(ElmoOptions.from_dict(OPTIONS, source="test"), 0.0).token_encoder
    with torch.no_grad():
        # Real characters score low and padding high, so a window that ran past the last
        # character into the added padding would win the max if it were not masked.
        encoder.char_embedding.uniform_(-1.0, -0.5)
        encoder.char_embedding[PADDING_ID].fill_(2.0)
        for conv in encoder.convolutions:
            conv.weight.uniform_(0.1, 0.2)
    for words in (["a", "cat", "sees"], ["a", "x" * 48, "y" * 60]):
        ids = torch.from_numpy(encode_tokens(words, 50))
        used = int((ids != PADDING_ID).sum(dim=1).max())
        width = min(50, used + encoder.widest_filter)
        chars = torch.nn.functional.embedding(ids[:, :width], encoder.char_embedding).transpose(1, 2)
        expected = torch.cat([conv(chars).amax(dim=2) for conv in encoder.convolutions], dim=1)
        clipped = width < used + encoder.widest_filter
        with torch.no_grad():
            if pool == "lookup":
                pooled = encoder._pool_by_lookup(ids[:, :width], clipped)
            else:
                pooled = encoder._pool_one_matmul(ids[:, :width], torch.float32, clipped)
        torch.testing.assert_close(pooled, expected, rtol=1e-6, atol=1e-6)
        if pool == "lookup":
            with torch.no_grad():
                by_lookup = encoder(ids)
            torch.testing.assert_close(by_lookup, encoder(ids).detach(), rtol=1e-6, atol=1e-6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = encoder(ids)
        torch.testing.assert_close(low.float(), encoder(ids), rtol=0.05, atol=0.05)


def test_an_fp32_run_resumes_in_bf16_and_a_bad_precision_names_the_setting(tmp_path):
    (tmp_path / "train.txt").write_text("\n".join(" ".join(s) for s in _sentences(200, seed=3)) + "\n", encoding="utf-8")
    (tmp_path / "tiny.cfg").write_text(CONFIG, encoding="utf-8")
    overrides = {"paths.train": str(tmp_path / "train.txt")}
    pretrain(tmp_path / "tiny.cfg", tmp_path / "out", overrides=overrides, progress=False)
    resumed = pretrain(
        tmp_path / "tiny.cfg",
        tmp_path / "out",
        overrides={**overrides, "training.max_steps": 8, "training.precision": "bf16"},
        resume=True,
        progress=False,
    )
    assert resumed.metrics["steps"] == 8 and resumed.objective.training_precision == "bf16"
    losses = {
        r["step"]: r["loss"]
        for r in map(json.loads, (tmp_path / "out" / "log.jsonl").read_text().splitlines())
        if r["event"] == "train"
    }
    assert sorted(losses) == list(range(1, 9)) and all(loss == loss and loss < 10 for loss in losses.values())
    with pytest.raises(PretrainConfigError, match=r"\[training\] precision must be one of \['fp32', 'bf16'\]"):
        load_config(tmp_path / "tiny.cfg", {**overrides, "training.precision": "fp16"})


def test_training_autocast_refuses_an_inference_only_precision_naming_the_setting():
    from spacy_elmo.bilm.training_precision import training_autocast
    from spacy_elmo.errors import ElmoOptionsError

    with pytest.raises(
        ElmoOptionsError, match=r"\[training\] precision must be one of 'fp32', 'bf16', got 'int8': .*inference only"
    ):
        training_autocast("int8", torch.device("cpu"))
