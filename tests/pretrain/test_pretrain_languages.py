"""Pretraining for another language with the existing command: a tiny biLM learns a synthetic
Russian (Cyrillic) or Chinese (CJK, one token per character) text, tokenised by
``spacy.blank(lang)``, and the exported model works in a pipeline of that language. The
character ids are UTF-8 bytes, so any script needs nothing but ``[data] lang``."""

import json
import random
from typing import List

import numpy as np
import pytest

from pretrain_helpers import cli_args, tiny_config, write_lines
from spacy_elmo.__main__ import main as cli_main

pytestmark = pytest.mark.usefixtures("one_thread")

RUSSIAN = (
    ["Кошка", "Собака", "Мой друг", "Старый учитель", "Иван", "Мария", "Дети"],
    ["видит", "любит", "находит", "ест", "рисует", "ищет"],
    ["птицу", "красный мяч", "яблоко", "реку", "свежий хлеб", "маленький дом"],
    ["", "в саду", "дома", "у реки", "каждое утро"],
)
CHINESE = (
    ["小猫", "小狗", "我的朋友", "老师", "孩子们", "妈妈"],
    ["看见", "喜欢", "找到", "吃", "画", "跟着"],
    ["一只鸟", "红色的球", "苹果", "小河", "面包", "房子"],
    ["", "在花园里", "在家", "每天早上"],
)
TEXTS = {"ru": (RUSSIAN, " ", "."), "zh": (CHINESE, "", "。")}


def paragraphs(lang: str, n: int, seed: int) -> List[str]:
    """``n`` lines of raw text, three sentences each (subject, verb, object, sometimes a place)."""
    (subjects, verbs, objects, places), space, stop = TEXTS[lang]
    rng = random.Random(seed)

    def sentence() -> str:
        words = [rng.choice(subjects), rng.choice(verbs), rng.choice(objects), rng.choice(places)]
        return space.join(w for w in words if w) + stop

    return [space.join(sentence() for _ in range(3)) for _ in range(n)]


@pytest.mark.parametrize("lang", ["ru", "zh"])
def test_a_biLM_pretrained_on_another_script_works_in_that_languages_pipeline(lang, tmp_path):
    import spacy

    config = tmp_path / "tiny.cfg"
    config.write_text(
        tiny_config(
            {
                "learn_rate": 0.01,
                "batch_tokens": 512,
                "max_steps": 60,
                "eval_every": 30,
                "log_every": 30,
                "checkpoint_every": 1000,
                "softmax": "sampled",
                "n_samples": 64,
            },
            data={"format": "paragraphs", "lang": lang},
        ),
        encoding="utf-8",
    )
    train = write_lines(tmp_path / "train.txt.gz", paragraphs(lang, 200, seed=1))
    dev = write_lines(tmp_path / "dev.txt", paragraphs(lang, 20, seed=2))
    output = tmp_path / "bilm"
    overrides = {"paths.train": str(train), "paths.dev": str(dev)}
    assert cli_main(["pretrain", str(config), str(output), "--no-progress", *cli_args(overrides)]) == 0

    evals = [r for r in map(json.loads, (output / "log.jsonl").read_text().splitlines()) if r["event"] == "eval"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 60
    assert evals[-1]["dev"]["ppl"] < 0.5 * evals[0]["dev"]["ppl"]
    vocab = (output / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert {"видит", "Кошка"} <= set(vocab) if lang == "ru" else {"猫", "。"} <= set(vocab)

    nlp = spacy.blank(lang)
    nlp.add_pipe("elmo", config={"model": {"weights": str(output / "model-best")}})
    (subjects, verbs, objects, _), space, stop = TEXTS[lang]
    docs = [nlp(space.join([subject, verbs[1], objects[0]]) + stop) for subject in subjects[:2]]
    for doc in docs:
        layers = doc._.elmo_layers
        assert layers.shape == (3, len(doc), 32) and np.isfinite(layers).all()
        assert doc.tensor.shape == (len(doc), 32)
    # The object's last token, the same in both sentences after different subjects.
    assert docs[0][-2].text == docs[1][-2].text
    a, b = docs[0]._.elmo_layers[:, -2], docs[1]._.elmo_layers[:, -2]
    np.testing.assert_array_equal(a[0], b[0])  # the token layer sees the word alone
    assert not np.allclose(a[1], b[1], atol=1e-4) and not np.allclose(a[2], b[2], atol=1e-4)
