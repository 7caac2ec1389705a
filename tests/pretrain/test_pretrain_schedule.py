"""The pretraining learning-rate schedule: warm-up, then constant or decaying over the budget."""

import math

import pytest

from spacy_elmo.pretrain import load_config
from spacy_elmo.pretrain.errors import PretrainConfigError
from spacy_elmo.pretrain.optim import scheduled_learn_rate

CONFIG = "configs/pretrain_tiny.cfg"


def training(**settings):
    overrides = {"paths.train": "unused.txt", **{f"training.{k}": v for k, v in settings.items()}}
    return load_config(CONFIG, overrides).training


def test_constant_after_warm_up_by_default():
    config = training(learn_rate=0.01, lr_warmup_steps=4, max_steps=100)
    assert [scheduled_learn_rate(config, s) for s in range(4)] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])
    assert scheduled_learn_rate(config, 99, tokens=10**9) == 0.01


@pytest.mark.parametrize("decay,halfway", [("linear", 0.5), ("cosine", 0.5)])
def test_decay_reaches_zero_at_the_end_of_the_nearer_budget(decay, halfway):
    config = training(learn_rate=0.01, lr_warmup_steps=0, lr_decay=decay, max_steps=1000, max_tokens=10_000)
    assert scheduled_learn_rate(config, 0, tokens=0) == pytest.approx(0.01)
    assert scheduled_learn_rate(config, 100, tokens=5_000) == pytest.approx(0.01 * halfway)  # tokens are nearer
    assert scheduled_learn_rate(config, 500, tokens=100) == pytest.approx(0.01 * halfway)  # steps are nearer
    assert scheduled_learn_rate(config, 1000, tokens=0) == pytest.approx(0.0, abs=1e-12)
    quarter = scheduled_learn_rate(config, 250, tokens=0)
    expected = 0.75 if decay == "linear" else 0.5 * (1 + math.cos(math.pi / 4))
    assert quarter == pytest.approx(0.01 * expected)


def test_decay_without_an_end_is_refused():
    with pytest.raises(PretrainConfigError, match="lr_decay"):
        training(lr_decay="cosine", max_steps=None, max_tokens=None, max_minutes=5)


def test_one_budget_measure_for_the_schedule_and_the_progress_bar():
    """The schedule ignores wall time (a resumed run repeats it exactly); the bar counts it."""
    config = training(max_steps=1000, max_tokens=10_000, max_minutes=10)
    assert config.budget_spent(100, tokens=2_000) == pytest.approx(0.2)
    assert config.budget_spent(100, tokens=2_000, seconds=300) == pytest.approx(0.5)
    assert config.budget_spent(5_000, tokens=0) == 1.0
    no_limits = training(max_steps=None, max_tokens=None, max_minutes=None, max_epochs=1)
    assert no_limits.budget_spent(100, tokens=2_000, seconds=300) is None
