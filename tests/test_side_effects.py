"""Importing spacy-elmo changes nothing process-wide, and errors name the component's own config path."""

import subprocess
import sys

import pytest
import spacy

from spacy_elmo import ElmoOptionsError, ElmoWeightsError

IMPORTS = """
import spacy, spacy_elmo, spacy_elmo.pipeline.component, spacy_elmo.pipeline.architectures, spacy_elmo.pretrain.model
from spacy.tokens import Doc
import spacy_elmo.bilm.model as model
print(Doc.has_extension("elmo_layers"), model._fork_guard_installed)
nlp = spacy.blank("en")
nlp.add_pipe("elmo")
print(Doc.has_extension("elmo_layers"), model._fork_guard_installed)
"""


def test_importing_changes_nothing_until_a_component_is_built():
    done = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:2] == ["False False", "True False"]


def test_load_errors_name_the_components_own_config_path(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("elmo", name="contextual", config={"model": {"weights": str(tmp_path / "x" / "weights.hdf5")}})
    with pytest.raises(ElmoWeightsError, match=r"Set \[components\.contextual\.model\] weights to an existing weights.hdf5"):
        nlp("text")


def test_bad_settings_name_the_setting_and_where_it_lives():
    nlp = spacy.blank("en")
    with pytest.raises(ElmoOptionsError, match=r"\[components.<name>.model\].*layer_cache_mb must be an integer >= 0, got -1"):
        nlp.add_pipe("elmo", config={"model": {"layer_cache_mb": -1}})


def test_layer_and_component_share_their_defaults():
    from spacy_elmo.layers.bilm_layer import ElmoBiLMLayer
    from spacy_elmo.pipeline.component import DEFAULT_ELMO_MODEL

    layer = ElmoBiLMLayer()
    nlp = spacy.blank("en")
    elmo = nlp.add_pipe("elmo")
    assert (
        layer.attrs["layer_cache_mb"]
        == DEFAULT_ELMO_MODEL["layer_cache_mb"]
        == elmo.model.get_ref("bilm").attrs["layer_cache_mb"]
    )
    assert "keep_freed_memory" not in DEFAULT_ELMO_MODEL
