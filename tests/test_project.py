"""project.yml as weasel reads it: every command's deps and outputs are single paths."""

from pathlib import Path

from weasel.util import load_project_config

REPO = Path(__file__).resolve().parents[1]


def test_every_dependency_and_output_is_one_path():
    config = load_project_config(REPO, overrides={"vars.data_dir": "/data"})
    merged = [
        (command["name"], path)
        for command in config["commands"]
        for path in command.get("deps", []) + command.get("outputs", []) + command.get("outputs_no_cache", [])
        if ", " in path
    ]
    assert merged == []
    pretrain = next(command for command in config["commands"] if command["name"] == "pretrain")
    assert "./configs/pretrain_small.cfg" in pretrain["deps"]
