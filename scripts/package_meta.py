"""Write the meta.json that ``spacy package --meta-path`` uses, with the licence of the pipeline's biLM.

A packaged ELMo pipeline carries the biLM's weights, so it must carry their licence:

* ``default`` (the biLM shipped with spacy-elmo) and ``pretrained`` (this project's own, trained
  on the English Wikipedia text) are models of CC BY-SA 3.0 text: the package is CC BY-SA 3.0,
  with the Wikipedia contributors credited in ``sources``;
* the published AllenNLP models (``small``, ``medium``, ``original``, ``original-5.5b``) are
  Apache-2.0;
* for any other biLM (a directory of your own) pass ``--license`` yourself.

The pipeline's own meta.json is copied with ``license`` and ``sources`` set; the pipeline
itself is not changed. ``spacy package`` adds ``spacy-elmo`` to the package's requirements
by itself (the ``elmo`` factory comes from it).

    python scripts/package_meta.py training/ner-elmo/model-best packages/meta.json --bilm default
"""

from pathlib import Path
from typing import Any, Dict, List, Optional

import srsly
import typer
from wasabi import msg

from spacy_elmo.bilm.pretrained import DEFAULT_MODEL_NAME, PUBLISHED_MODELS

WIKIPEDIA_LICENSE = "CC BY-SA 3.0"
PUBLISHED_LICENSE = "Apache-2.0"
PRETRAINED = "pretrained"

WIKIPEDIA_SOURCE = {
    "name": "English Wikipedia (the text the biLM was trained on)",
    "url": "https://en.wikipedia.org",
    "license": WIKIPEDIA_LICENSE,
    "author": "Wikipedia contributors",
}
PUBLISHED_SOURCE = {
    "name": "ELMo (Peters et al. 2018), published biLM weights",
    "url": "https://allenai.org/allennlp/software/elmo",
    "license": PUBLISHED_LICENSE,
    "author": "Allen Institute for AI",
}


def bilm_license(bilm: str) -> Optional[Dict[str, Any]]:
    """The licence and source entry for a project ``bilm`` setting, or None when it cannot be known."""
    if bilm.lower() in (DEFAULT_MODEL_NAME, PRETRAINED):
        return WIKIPEDIA_SOURCE
    if bilm.lower() in PUBLISHED_MODELS:
        return PUBLISHED_SOURCE
    return None


def main(
    pipeline: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="The trained pipeline (its meta.json is the starting point)"
    ),
    output: Path = typer.Argument(..., dir_okay=False, help="Where to write the meta.json for spacy package --meta-path"),
    bilm: str = typer.Option(
        ..., "--bilm", help="The project's bilm setting: default, pretrained, a published name or a directory"
    ),
    license_: Optional[str] = typer.Option(None, "--license", help="The package licence; required when --bilm is a directory"),
) -> None:
    """Copy the pipeline's meta.json to ``output`` with the licence its biLM requires."""
    meta_path = pipeline / "meta.json"
    if not meta_path.is_file():
        msg.fail(f"{meta_path} not found", "Pass a pipeline directory written by spacy train (model-best).", exits=1)
    meta = srsly.read_json(meta_path)
    source = bilm_license(bilm)
    if license_ is None and source is None:
        msg.fail(
            f"The licence of the biLM {bilm!r} is not known to this script",
            "Pass the licence of its weights (and of the text it was trained on) with --license, e.g. --license MIT.",
            exits=1,
        )
    meta["license"] = license_ or source["license"]  # type: ignore[index]
    sources: List[Dict[str, Any]] = [
        entry for entry in meta.get("sources") or [] if entry.get("name") != (source or {}).get("name")
    ]
    if source is not None:
        sources.append(source)
    meta["sources"] = sources
    output.parent.mkdir(parents=True, exist_ok=True)
    srsly.write_json(output, meta)
    msg.good(f"{output}: license {meta['license']!r} (biLM {bilm!r})")


if __name__ == "__main__":
    typer.run(main)
