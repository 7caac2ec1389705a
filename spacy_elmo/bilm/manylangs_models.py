"""The published ELMoForManyLangs models: their languages, names and download locations.

This table is the one list of them: ``download manylangs:CODE`` reads it, and the table of
docs/languages.md is :func:`markdown_table` (tests/bilm/test_manylangs_download.py compares them).
A model is named ``manylangs:CODE``, where CODE is the language's spaCy code (ISO 639).
"""

import os
from typing import Dict, List, NamedTuple, Optional

PREFIX = "manylangs:"
"""How a weights setting names a published ELMoForManyLangs model: ``manylangs:de``."""

DEFAULT_MIRROR = "http://vectors.nlpl.eu/repository/11"
"""The NLPL word vectors repository, which hosts one zip archive per language (``<ID>.zip``)."""
MIRROR_ENV = "SPACY_ELMO_MANYLANGS_MIRROR"


class ManyLangsModel(NamedTuple):
    """One published model: spaCy language code, language, NLPL repository ID, and the archive's
    SHA-256 where one is published (None: the download's own digest is recorded instead)."""

    code: str
    language: str
    nlpl_id: int
    sha256: Optional[str] = None


MODELS: Dict[str, ManyLangsModel] = {
    model.code: model
    for model in (
        ManyLangsModel("ar", "Arabic", 136),
        ManyLangsModel("bg", "Bulgarian", 137),
        ManyLangsModel("ca", "Catalan", 138),
        ManyLangsModel("cs", "Czech", 139),
        ManyLangsModel("cu", "Old Church Slavonic", 140),
        ManyLangsModel("da", "Danish", 141),
        ManyLangsModel("de", "German", 142),
        ManyLangsModel("el", "Greek", 143),
        ManyLangsModel("en", "English", 144),
        ManyLangsModel("es", "Spanish", 145),
        ManyLangsModel("et", "Estonian", 146),
        ManyLangsModel("eu", "Basque", 147),
        ManyLangsModel("fa", "Persian", 148),
        ManyLangsModel("fi", "Finnish", 149),
        ManyLangsModel("fr", "French", 150),
        ManyLangsModel("ga", "Irish", 151),
        ManyLangsModel("gl", "Galician", 152),
        ManyLangsModel("grc", "Ancient Greek", 153),
        ManyLangsModel("he", "Hebrew", 154),
        ManyLangsModel("hi", "Hindi", 155),
        ManyLangsModel("hr", "Croatian", 156),
        ManyLangsModel("hu", "Hungarian", 157),
        ManyLangsModel("id", "Indonesian", 158),
        ManyLangsModel("it", "Italian", 159),
        ManyLangsModel("ja", "Japanese", 160),
        ManyLangsModel("ko", "Korean", 161),
        ManyLangsModel("la", "Latin", 162),
        ManyLangsModel("lv", "Latvian", 163),
        ManyLangsModel("nl", "Dutch", 164),
        ManyLangsModel("nb", "Norwegian Bokmål", 165),
        ManyLangsModel("nn", "Norwegian Nynorsk", 166),
        ManyLangsModel("pl", "Polish", 167),
        ManyLangsModel("pt", "Portuguese", 168),
        ManyLangsModel("ro", "Romanian", 169),
        ManyLangsModel("ru", "Russian", 170),
        ManyLangsModel("sk", "Slovak", 171),
        ManyLangsModel("sl", "Slovene", 172),
        ManyLangsModel("sv", "Swedish", 173),
        ManyLangsModel("tr", "Turkish", 174),
        ManyLangsModel("ug", "Uyghur", 175),
        ManyLangsModel("uk", "Ukrainian", 176),
        ManyLangsModel("ur", "Urdu", 177),
        ManyLangsModel("vi", "Vietnamese", 178),
        ManyLangsModel("zh", "Chinese (traditional)", 179),
    )
}


def is_name(text: str) -> bool:
    """Whether ``text`` names a model the ``manylangs:`` way (known or not)."""
    return text.lower().startswith(PREFIX)


def names() -> List[str]:
    """Every model's name, ``manylangs:ar`` to ``manylangs:zh``."""
    return [PREFIX + code for code in MODELS]


def base_url() -> str:
    """``$SPACY_ELMO_MANYLANGS_MIRROR`` (for mirrors and tests), else the NLPL repository."""
    return (os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR).rstrip("/")


def archive_url(model: ManyLangsModel) -> str:
    """Where a model's zip archive is published."""
    return f"{base_url()}/{model.nlpl_id}.zip"


def markdown_table(columns: int = 2) -> str:
    """The table of docs/languages.md: language, name and repository ID, ``columns`` models a row."""
    header = "| " + " | ".join(["Language | Name | ID"] * columns) + " |"
    rule = "| " + " | ".join(["--- | --- | ---:"] * columns) + " |"
    cells = [f"{m.language} | `{PREFIX}{m.code}` | {m.nlpl_id}" for m in MODELS.values()]
    rows = []
    for start in range(0, len(cells), columns):
        row = cells[start : start + columns]
        row += [" |  | "] * (columns - len(row))
        rows.append("| " + " | ".join(row) + " |")
    return "\n".join([header, rule, *rows])
