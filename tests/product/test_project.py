"""project.yml as weasel reads it: every command's deps and outputs are single paths."""

import re
from pathlib import Path
from typing import List, Set

from weasel.util import load_project_config

REPO = Path(__file__).resolve().parents[2]


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


def data_part(path: str) -> str:
    """The part of the data directory ('conll2003', 'textcat', 'lm') a dependency lies in."""
    return Path(path).relative_to("/data").parts[0]


def checked_parts(script: List[str]) -> Set[str]:
    """The parts a check-data command checks: its --parts, or every part without it."""
    match = re.search(r"--parts (\S+)", " ".join(script))
    return set(match.group(1).split(",")) if match else {"conll2003", "textcat", "lm"}


def test_each_workflow_checks_and_converts_only_what_it_reads():
    """A workflow's data check covers exactly the data its steps read (the NER workflows
    never ask for SST), and every corpus file a step reads is written by an earlier step."""
    config = load_project_config(REPO, overrides={"vars.data_dir": "/data"})
    commands = {command["name"]: command for command in config["commands"]}
    for name, steps in config["workflows"].items():
        read = {data_part(dep) for step in steps for dep in commands[step].get("deps", []) if dep.startswith("/data/")}
        checks = [step for step in steps if step.startswith("check-data")]
        if checks:
            assert checks == [steps[0]], name
            assert checked_parts(commands[checks[0]]["script"]) == read, name
        written: Set[str] = set()
        for step in steps:
            for dep in commands[step].get("deps", []):
                if dep.startswith("corpus/"):
                    assert dep in written, f"workflow {name}: {step} reads {dep} before any step writes it"
            written.update(commands[step].get("outputs", []))
    assert "sst" not in " ".join(dep for step in config["workflows"]["ner"] for dep in commands[step].get("deps", []))
