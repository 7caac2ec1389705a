"""``python -m spacy_elmo init-config``: spaCy's own configs rewritten for ELMo validate and train."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.cli.debug_config import debug_config
from spacy.cli.init_config import init_config as spacy_init_config
from spacy.cli.train import train
from thinc.api import Config

from spacy_elmo.__main__ import main as cli_main
from spacy_elmo.errors import ElmoConfigError
from spacy_elmo.init_config import elmo_config

ELMO_TOK2VEC = "spacy-elmo.ElmoTok2Vec.v1"


def _spacy_config(tmp_path: Path, pipeline: str) -> Path:
    """What ``python -m spacy init config --pipeline PIPELINE`` writes (English, CPU, efficiency)."""
    path = tmp_path / f"{pipeline.replace(',', '_')}.cfg"
    spacy_init_config(lang="en", pipeline=pipeline.split(","), optimize="efficiency", gpu=False).to_disk(path)
    return path


def _load(path: Path) -> Config:
    return Config().from_disk(path, interpolate=False)


def _tok2vecs(config: Config, component: str):
    return [node for path, node in _blocks(config["components"][component]) if path[-1] == "tok2vec"]


def _blocks(block, path=()):
    for key, value in block.items():
        if isinstance(value, dict):
            yield path + (key,), value
            yield from _blocks(value, path + (key,))


def _loss_column(stdout: str, name: str):
    """The values of one column of spaCy's training table."""
    lines = stdout.splitlines()
    header = re.split(r"\s{2,}", next(line for line in lines if name in line).strip())
    index = header.index(name)
    rows = [line.split() for line in lines if re.match(r"^\s*\d+\s+\d+\s", line)]
    return [float(row[index]) for row in rows]


@pytest.mark.parametrize("pipeline", ["ner", "textcat", "tagger"])
def test_spacy_configs_become_elmo_configs_that_validate_and_train(pipeline, model_dir, synthetic_corpus, tmp_path, capfd):
    source = _spacy_config(tmp_path, pipeline)
    target = tmp_path / "elmo.cfg"
    assert cli_main(["init-config", str(source), str(target)]) == 0
    config = _load(target)
    assert config["nlp"]["pipeline"] == ["elmo", pipeline]
    assert "tok2vec" not in config["components"]
    elmo = config["components"]["elmo"]
    assert elmo["factory"] == "elmo" and elmo["frozen"] is True and elmo["model"]["weights"] == "default"
    (tok2vec,) = _tok2vecs(config, pipeline)
    assert tok2vec["@architectures"] == ELMO_TOK2VEC and tok2vec["elmo"]["upstream"] == "elmo"
    assert "components.tok2vec" not in target.read_text()  # no reference into the removed component

    debug_config(target, overrides={"paths.train": str(synthetic_corpus), "paths.dev": str(synthetic_corpus)})
    assert "Config is valid" in capfd.readouterr().out

    overrides = {
        "paths.train": str(synthetic_corpus),
        "paths.dev": str(synthetic_corpus),
        "components.elmo.model.weights": str(model_dir),
        "training.max_steps": 4,
        "training.eval_frequency": 2,
    }
    train(target, tmp_path / "out", overrides=overrides)
    losses = _loss_column(capfd.readouterr().out, "LOSS ELMO")
    assert losses and all(loss == 0.0 for loss in losses)  # frozen: no gradient reaches the biLM
    nlp = spacy.load(tmp_path / "out" / "model-last")
    assert nlp.pipe_names == ["elmo", pipeline]
    doc = nlp("Mary works for Google in Paris .")
    assert doc._.elmo_layers.shape == (3, 7, 32)


@pytest.mark.slow
def test_command_lines_for_ner_and_tagger_together(model_dir, synthetic_corpus, tmp_path):
    """The documented chain, each step its own process: spacy init config, init-config
    --fine-tune, spacy debug config, spacy train (which then reports a non-zero LOSS ELMO)."""

    def run(*args):
        done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    run("spacy", "init", "config", "base.cfg", "--pipeline", "ner,tagger")
    run("spacy_elmo", "init-config", "base.cfg", "elmo.cfg", "--fine-tune", "--weights", str(model_dir))
    config = _load(tmp_path / "elmo.cfg")
    assert config["nlp"]["pipeline"] == ["elmo", "ner", "tagger"]
    assert config["components"]["elmo"]["frozen"] is False
    for component in ("ner", "tagger"):
        (tok2vec,) = _tok2vecs(config, component)
        assert tok2vec["@architectures"] == ELMO_TOK2VEC
    data = ["--paths.train", str(synthetic_corpus), "--paths.dev", str(synthetic_corpus)]
    assert "Config is valid" in run("spacy", "debug", "config", "elmo.cfg", *data)
    stdout = run(
        "spacy", "train", "elmo.cfg", "--output", "out", *data, "--training.max_steps", "4", "--training.eval_frequency", "2"
    )
    losses = _loss_column(stdout, "LOSS ELMO")
    assert losses[-1] > 0  # fine-tuned: the squared norm of the gradient sent into the biLM
    assert (tmp_path / "out" / "model-best" / "elmo").is_dir()


def test_everything_but_the_token_vectors_is_kept(tmp_path):
    source = _load(_spacy_config(tmp_path, "ner,tagger"))
    result, notes = elmo_config(source, weights="small", frozen=False)
    assert result["components"]["elmo"]["model"]["weights"] == "small" and result["components"]["elmo"]["frozen"] is False
    changed = {("nlp", "pipeline"), ("system", "gpu_allocator"), ("training", "before_to_disk")}
    for path, value in _leaves(source):
        if path in changed or path[:2] == ("components", "tok2vec") or "tok2vec" in path[2:]:
            continue
        assert _get(result, path) == value, path
    assert result["system"]["gpu_allocator"] == "pytorch" and any("gpu_allocator" in note for note in notes)
    assert result["training"]["before_to_disk"] == {"@callbacks": "spacy-elmo.atomic_saves.v1"}
    assert any("atomic_saves" in note for note in notes)
    embed = result["components"]["ner"]["model"]["tok2vec"]["embed"]
    assert embed == {**source["components"]["tok2vec"]["model"]["embed"], "width": 96}
    assert result["components"]["ner"]["model"]["tok2vec"]["encode"] == source["components"]["tok2vec"]["model"]["encode"]
    assert source["nlp"]["pipeline"] == ["tok2vec", "ner", "tagger"]  # the input is not modified


def _leaves(block, path=()):
    for key, value in block.items():
        if isinstance(value, dict):
            yield from _leaves(value, path + (key,))
        else:
            yield path + (key,), value


def _get(block, path):
    for key in path:
        block = block[key]
    return block


def test_components_with_their_own_tok2vec_and_bag_of_words_textcat():
    """spaCy's default models: an ``ner`` with its own HashEmbedCNN, a bag-of-words ``textcat``."""
    nlp = spacy.blank("en")
    nlp.add_pipe("ner")
    nlp.add_pipe(
        "textcat",
        config={
            "model": {
                "@architectures": "spacy.TextCatBOW.v3",
                "exclusive_classes": True,
                "ngram_size": 1,
                "no_output_layer": False,
                "length": 262144,
            }
        },
    )
    result, notes = elmo_config(nlp.config)
    ner_tok2vec = result["components"]["ner"]["model"]["tok2vec"]
    hash_cnn = nlp.config["components"]["ner"]["model"]["tok2vec"]
    assert ner_tok2vec["@architectures"] == ELMO_TOK2VEC and ner_tok2vec["width"] == hash_cnn["width"]
    assert ner_tok2vec["embed"]["rows"] == [hash_cnn["embed_size"]] + [hash_cnn["embed_size"] // 2] * 3
    assert ner_tok2vec["encode"]["depth"] == hash_cnn["depth"]
    textcat = result["components"]["textcat"]["model"]
    assert textcat["@architectures"] == "spacy.TextCatEnsemble.v2"
    assert textcat["linear_model"] == nlp.config["components"]["textcat"]["model"]
    assert textcat["tok2vec"]["@architectures"] == ELMO_TOK2VEC
    assert any("TextCatEnsemble" in note for note in notes)
    rebuilt = spacy.util.load_model_from_config(result, auto_fill=True, validate=True)
    assert rebuilt.pipe_names == ["elmo", "ner", "textcat"]
    assert sorted(rebuilt.get_pipe("elmo").listening_components) == ["ner", "textcat"]


def test_refusals_name_the_problem(tmp_path, capsys):
    source = _spacy_config(tmp_path, "ner")
    elmo = tmp_path / "elmo.cfg"
    assert cli_main(["init-config", str(source), str(elmo)]) == 0
    capsys.readouterr()

    assert cli_main(["init-config", str(elmo), str(tmp_path / "again.cfg")]) == 1
    assert "already has an ELMo component ([components.elmo])" in capsys.readouterr().err
    assert not (tmp_path / "again.cfg").exists()

    text = source.read_text() + '\n\n[components.tok2vec.model.extra]\n@architectures = "spacy-elmo.ElmoMix.v1"\n'
    with pytest.raises(
        ElmoConfigError,
        match=r"already uses ELMo \(\[components.tok2vec.model.extra\] @architectures = \"spacy-elmo.ElmoMix.v1\"\)",
    ):
        elmo_config(Config().from_str(text, interpolate=False))

    before = elmo.read_bytes()
    assert cli_main(["init-config", str(source), str(elmo)]) == 1
    assert "already exists: pass --force" in capsys.readouterr().err
    assert elmo.read_bytes() == before
    assert cli_main(["init-config", str(source), str(elmo), "--force", "--weights", "medium"]) == 0
    assert _load(elmo)["components"]["elmo"]["model"]["weights"] == "medium"

    not_training = tmp_path / "not_training.cfg"
    not_training.write_text("[paths]\ntrain = null\n")
    assert cli_main(["init-config", str(not_training), str(tmp_path / "x.cfg")]) == 1
    assert f"{not_training} is not a spaCy training config: it has no [nlp] section" in capsys.readouterr().err
    garbage = tmp_path / "garbage.cfg"
    garbage.write_text("just some text\n")
    assert cli_main(["init-config", str(garbage), str(tmp_path / "x.cfg")]) == 1
    assert f"{garbage} is not a spaCy training config" in capsys.readouterr().err
    assert cli_main(["init-config", str(source), str(tmp_path / "x.cfg"), "--weights", "elmo-xxl"]) == 1
    assert "--weights 'elmo-xxl' is not 'default', a published model" in capsys.readouterr().err
    assert not (tmp_path / "x.cfg").exists()

    dangling = source.read_text().replace("path = ${paths.train}", "path = ${paths.nowhere}", 1)
    with pytest.raises(ElmoConfigError, match=r"a \$\{\.\.\.\} reference cannot be resolved .*paths.nowhere"):
        elmo_config(Config().from_str(dangling, interpolate=False))

    config = _load(source)
    config["components"]["ner"]["model"]["tok2vec"] = {
        "@architectures": "spacy-transformers.TransformerListener.v1",
        "upstream": "*",
    }
    with pytest.raises(ElmoConfigError, match=r"\[components.ner.model.tok2vec\] uses spacy-transformers.TransformerListener.v1"):
        elmo_config(config)
    rule_based = spacy.blank("en")
    rule_based.add_pipe("sentencizer")
    with pytest.raises(ElmoConfigError, match="no component has a token-to-vector layer"):
        elmo_config(rule_based.config)


def test_vectors_turn_static_vectors_on_beside_elmo_and_the_config_trains(
    model_dir, synthetic_corpus, floret_vectors, tmp_path, capsys
):
    """--vectors DIR: the ELMo tok2vec's embeddings include the static vectors (ner_elmo_vectors.cfg's
    setup), [paths] vectors names DIR, and the config initializes with them; a missing DIR is refused."""
    from spacy.training.initialize import init_nlp

    source = _spacy_config(tmp_path, "ner")
    out = tmp_path / "elmo_vectors.cfg"
    assert cli_main(["init-config", str(source), str(out), "--weights", str(model_dir), "--vectors", str(floret_vectors)]) == 0
    assert "include_static_vectors = true in the embeddings of 1 ELMo tok2vec layer(s)" in capsys.readouterr().err
    config = _load(out)
    (tok2vec,) = _tok2vecs(config, "ner")
    assert tok2vec["@architectures"] == ELMO_TOK2VEC and tok2vec["embed"]["include_static_vectors"] is True
    assert config["paths"]["vectors"] == str(floret_vectors) and config["initialize"]["vectors"] == "${paths.vectors}"
    overrides = {"paths.train": str(synthetic_corpus), "paths.dev": str(synthetic_corpus)}
    nlp = init_nlp(spacy.util.load_config(out, overrides=overrides))
    assert nlp.vocab.vectors.mode == "floret" and nlp.vocab.vectors.shape == (50, 8)

    assert cli_main(["init-config", str(source), str(tmp_path / "x.cfg"), "--vectors", str(tmp_path / "none")]) == 1
    assert "is neither a directory nor an installed spaCy package" in capsys.readouterr().err
    assert not (tmp_path / "x.cfg").exists()


def test_a_config_with_its_own_before_to_disk_keeps_it_and_is_told(tmp_path):
    source = _load(_spacy_config(tmp_path, "ner"))
    source["training"]["before_to_disk"] = {"@callbacks": "spacy.models_with_nvtx_range.v1"}
    result, notes = elmo_config(source)
    assert result["training"]["before_to_disk"] == {"@callbacks": "spacy.models_with_nvtx_range.v1"}
    assert any("already holds a callback" in note for note in notes)
