"""The package's layers import only downward (docs/design.md, "Layers and imports"): a small
AST check over every module of spacy_elmo/, failing with each offending import."""

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / "spacy_elmo"

LAYERS: Dict[str, int] = {
    "chars": 0,
    "files": 0,
    "errors": 0,
    "locks": 0,
    "memory": 0,
    "bilm": 1,
    "layers": 2,
    "pipeline": 3,
    "embed": 4,
    "pretrain": 4,
    "init_config": 4,
    "download": 4,
    "shipped_configs": 4,
    "__main__": 5,
    "__init__": 5,
}
"""Rank of each top-level module or subpackage of spacy_elmo: a module may import from its own
rank or below. The commands at rank 4 are siblings and do not import each other; the
package's ``__init__`` (the public names) and ``__main__`` (every command) sit above them."""

SIBLINGS_APART = 4
"""The rank whose members may not import one another."""

NO_SPACY = ("chars", "files", "errors", "locks", "memory", "bilm")
"""Modules that run without spaCy or Thinc: the biLM is usable as plain PyTorch."""


def _modules() -> Iterator[Tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield ".".join(parts), path


def _imports(module: str, path: Path) -> Iterator[Tuple[int, str]]:
    """Every module that ``module`` imports, as an absolute dotted name, with its line."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None:  # from . import name: each name may be a module
                for alias in node.names:
                    yield node.lineno, f"{target}.{alias.name}"
            else:
                yield node.lineno, target


def _top(dotted: str) -> str:
    """The top-level module or subpackage of spacy_elmo that ``dotted`` belongs to."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_top_level_module_has_a_layer():
    packages = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    tops = packages | {path.stem for path in PACKAGE.glob("*.py")}
    assert sorted(tops - set(LAYERS)) == [], "give each new module of spacy_elmo/ a rank in LAYERS"


def test_modules_import_only_their_own_layer_or_below():
    offending: List[str] = []
    for module, path in _modules():
        source = _top(module)
        for line, imported in _imports(module, path):
            if imported != "spacy_elmo" and not imported.startswith("spacy_elmo."):
                continue
            target = _top(imported)
            if target not in LAYERS or source == target:
                continue
            upward = LAYERS[target] > LAYERS[source]
            sideways = LAYERS[target] == LAYERS[source] == SIBLINGS_APART
            if upward or sideways:
                where = f"{path.relative_to(PACKAGE.parent)}:{line}"
                offending.append(
                    f"{where}: {module} ({source}, rank {LAYERS[source]}) imports {imported} (rank {LAYERS[target]})"
                )
    assert offending == [], "imports against the layering of docs/design.md:\n" + "\n".join(offending)


def test_the_bilm_and_the_modules_below_it_do_not_import_spacy_or_thinc():
    offending = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {module} imports {imported}"
        for module, path in _modules()
        if _top(module) in NO_SPACY
        for line, imported in _imports(module, path)
        if imported.split(".")[0] in ("spacy", "thinc")
    ]
    assert offending == [], "\n".join(offending)


def test_the_check_sees_relative_imports(tmp_path):
    """The resolution of ``from ..x import y`` that the checks rely on."""
    path = tmp_path / "module.py"
    path.write_text("from ..layers.bilm_layer import ElmoBiLMLayer\nfrom . import model\nimport spacy_elmo.files\n")
    assert list(_imports("spacy_elmo.bilm.module", path)) == [
        (1, "spacy_elmo.layers.bilm_layer"),
        (2, "spacy_elmo.bilm.model"),
        (3, "spacy_elmo.files"),
    ]
