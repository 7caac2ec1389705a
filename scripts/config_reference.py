"""Write the defaults of the ``elmo`` component and the spacy-elmo architectures into
docs/configuration.md, read off the code that defines them (the one source of defaults).

The block between ``<!-- elmo-defaults:start -->`` and ``<!-- elmo-defaults:end -->`` is
replaced; ``tests/product/test_readme.py`` checks that it equals what this script writes now.
"""

import inspect
from pathlib import Path
from typing import Callable, Dict, List, Optional

import spacy
import typer
from wasabi import msg

from spacy_elmo.files import write_text_atomic
from spacy_elmo.pipeline import architectures
from update_readme import replace_block

BLOCK = "elmo-defaults"
PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
ARCHITECTURES: Dict[str, Callable] = {
    "spacy-elmo.ElmoListener.v1": architectures.ElmoListener_v1,
    "spacy-elmo.ElmoTok2Vec.v1": architectures.ElmoTok2Vec_v1,
    "spacy-elmo.ElmoMix.v1": architectures.ElmoMix_v1,
}
MEANINGS = {
    "elmo": "the ELMo input: an ElmoListener.v1 (in ElmoMix.v1, the biLM itself, an ElmoBiLM.v1)",
    "embed": "spaCy's own embeddings (e.g. MultiHashEmbed.v2) concatenated with ELMo; null leaves them out",
    "width": "output width (a Maxout projection of the concatenation)",
    "encode": "optional contextual encoder after the projection (e.g. MaxoutWindowEncoder.v2)",
}
"""Meanings of the settings whose function documents them nowhere else."""


def component_defaults() -> str:
    """The ``[components.elmo]`` sections spaCy fills in for ``nlp.add_pipe("elmo")``."""
    nlp = spacy.blank("en")
    nlp.add_pipe("elmo")
    text = nlp.config.to_str()
    sections = text.split("\n\n")
    return "\n\n".join(section for section in sections if section.startswith("[components.elmo"))


def parameter_docs(function: Callable) -> Dict[str, str]:
    """``name: meaning`` lines of a docstring, by name."""
    found: Dict[str, str] = {}
    name: Optional[str] = None
    for line in (inspect.getdoc(function) or "").splitlines():
        head, _, rest = line.partition(": ")
        if rest and head.isidentifier():
            name = head
            found[name] = rest.strip()
        elif name and line.startswith("    "):
            found[name] += " " + line.strip()
        else:
            name = None
    return found


def architecture_rows() -> List[str]:
    """A Markdown table of every architecture setting: default and meaning."""
    rows = ["| architecture | setting | default | meaning |", "|---|---|---|---|"]
    listener_docs = parameter_docs(architectures.ElmoListener_v1)
    for name, function in ARCHITECTURES.items():
        meanings = {**MEANINGS, **listener_docs, **parameter_docs(function)}
        for parameter in inspect.signature(function).parameters.values():
            default = "required" if parameter.default is inspect.Parameter.empty else repr(parameter.default)
            default = {"None": "null", "True": "true", "False": "false"}.get(default, default).replace("'", '"')
            meaning = meanings.get(parameter.name, "").replace("``", "`")
            rows.append(f"| `{name}` | `{parameter.name}` | {default} | {meaning} |")
    return rows


def render() -> str:
    """The block's text."""
    return "\n".join(["```ini", component_defaults().strip(), "```", "", *architecture_rows()])


def main(page: Path = typer.Argument(PAGE, help="The page with the elmo-defaults markers")) -> None:
    """Write the current defaults into ``page``."""
    updated = replace_block(page.read_text(encoding="utf-8"), render(), BLOCK)
    if updated is None:
        msg.fail(f"{page} needs one '<!-- {BLOCK}:start -->' line followed by one '<!-- {BLOCK}:end -->' line", exits=1)
    write_text_atomic(page, updated)
    msg.good(f"Defaults written into {page}")


if __name__ == "__main__":
    typer.run(main)
