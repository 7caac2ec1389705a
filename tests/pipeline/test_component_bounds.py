"""Promises of the component that no other test held it to: the max_batch_tokens bound per biLM
call, a 100k-token document, listeners that take any upstream, grad_factor, the fork guard,
and the installed console script."""

import os
import shutil
import subprocess

import numpy as np
import pytest
import spacy
import torch
from spacy.tokens import Doc
from spacy.training import Example
from thinc.api import Adam

from spacy_elmo.layers.bilm_layer import elmo_shim

TEXTS = [" ".join(["word"] * n) for n in (1, 3, 7, 12, 30, 5, 2, 19, 8, 40)]


def elmo_nlp(model_dir, name="elmo", **model):
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "elmo", name=name, config={"model": {"weights": str(model_dir), "token_cache_size": 0, "layer_cache_mb": 0, **model}}
    )
    nlp.initialize()
    return nlp


def test_every_bilm_call_stays_within_max_batch_tokens(model_dir):
    """rows × (longest + 2 boundary tokens) ≤ max_batch_tokens for every call, unless one
    sentence alone is longer than the budget (then it runs alone)."""
    nlp = elmo_nlp(model_dir, max_batch_tokens=48)
    bilm = elmo_shim(nlp.get_pipe("elmo").model.get_ref("bilm")).bilm
    calls = []
    real = bilm.index_batch

    def recording(batch):
        calls.append((len(batch), max(len(s) for s in batch)))
        return real(batch)

    bilm.index_batch = recording
    docs = list(nlp.pipe(TEXTS, batch_size=10))
    assert sum(rows for rows, _ in calls) == len(TEXTS) and len(calls) > 1
    assert all(rows * (longest + 2) <= 48 or rows == 1 for rows, longest in calls), calls
    assert [doc._.elmo_layers.shape[1] for doc in docs] == [len(text.split()) for text in TEXTS]


def test_a_100k_token_document_is_read_in_pieces(model_dir):
    nlp = elmo_nlp(model_dir, max_piece_length=256)
    words = [f"w{i % 997}" for i in range(100_000)]
    doc = nlp(Doc(nlp.vocab, words=words))
    assert doc._.elmo_layers.shape == (3, 100_000, 32) and doc.tensor.shape == (100_000, 32)
    assert np.isfinite(doc.tensor).all()
    piece = nlp(Doc(nlp.vocab, words=words[256:512]))
    np.testing.assert_allclose(doc._.elmo_layers[:, 256:512], piece._.elmo_layers, atol=5e-5)


def _ner_nlp(model_dir, upstream: str, grad_factor: float, frozen: bool, elmo_name: str = "elmo"):
    nlp = spacy.blank("en")
    nlp.add_pipe("elmo", name=elmo_name, config={"model": {"weights": str(model_dir), "layer_cache_mb": 0}, "frozen": frozen})
    tok2vec = {
        "@architectures": "spacy-elmo.ElmoTok2Vec.v1",
        "width": 16,
        "elmo": {"@architectures": "spacy-elmo.ElmoListener.v1", "upstream": upstream, "grad_factor": grad_factor},
        "embed": None,
    }
    nlp.add_pipe(
        "ner",
        config={
            "model": {
                "@architectures": "spacy.TransitionBasedParser.v2",
                "state_type": "ner",
                "hidden_width": 16,
                "maxout_pieces": 2,
                "use_upper": True,
                "tok2vec": tok2vec,
            }
        },
    )
    examples = [Example.from_dict(nlp.make_doc("Alice lives in Paris ."), {"entities": [(0, 5, "PER"), (15, 20, "LOC")]})] * 4
    optimizer = nlp.initialize(lambda: examples)
    return nlp, examples, optimizer


def _bilm_weights(nlp, name="elmo"):
    return {k: v.copy() for k, v in elmo_shim(nlp.get_pipe(name).model.get_ref("bilm")).bilm.to_arrays().items()}


def test_a_listener_with_upstream_star_listens_to_any_elmo_component(model_dir):
    nlp, examples, optimizer = _ner_nlp(model_dir, upstream="*", grad_factor=1.0, frozen=True, elmo_name="contextual")
    assert nlp.get_pipe("contextual").listening_components == ["ner"]
    losses = {}
    for _ in range(3):
        nlp.update(examples, sgd=optimizer, losses=losses)
    assert losses["ner"] > 0


@pytest.mark.parametrize("grad_factor,changes", [(0.0, False), (1.0, True)])
def test_grad_factor_scales_what_a_fine_tuned_bilm_receives(model_dir, grad_factor, changes):
    nlp, examples, _ = _ner_nlp(model_dir, upstream="elmo", grad_factor=grad_factor, frozen=False)
    optimizer = Adam(0.01, L2=0.0)  # no weight decay: only gradients move the weights
    before = _bilm_weights(nlp)
    losses = {}
    for _ in range(3):  # the parser's output layer starts at zero: the first step sends no gradient down
        nlp.update(examples, sgd=optimizer, losses=losses)
    after = _bilm_weights(nlp)
    changed = any(not np.array_equal(before[k], after[k]) for k in before)
    assert changed is changes
    assert (losses["elmo"] > 0) is changes


def test_a_process_forked_after_a_bilm_is_built_starts_with_one_torch_thread(model_dir):
    elmo_nlp(model_dir)("The bank .")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    read, write = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:
            os.write(write, str(torch.get_num_threads()).encode())
            os._exit(0)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        assert os.read(read, 16).decode() == "1" and status == 0
    finally:
        os.close(read)
        torch.set_num_threads(before)


def test_the_console_script_is_installed_and_runs():
    script = shutil.which("spacy-elmo")
    assert script is not None, "the spacy-elmo console script is not on PATH: reinstall the package"
    done = subprocess.run([script, "config", "--list"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ner_elmo" in done.stdout, done.stderr
