"""Write configs/ner_baseline_vectors.cfg and configs/ner_elmo_vectors.cfg from their base configs.

Each is its base config with floret static vectors turned on (``include_static_vectors``) and
``spacy-elmo.require_vectors.v1`` in ``[initialize.before_init]`` (chaining the base's own
``before_init`` callback), so the two never drift from the configs they are compared with.
tests/test_training.py checks that the committed files are what this script writes.

    python scripts/vectors_configs.py
"""

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASES = ("ner_baseline", "ner_elmo")
REQUIRE = '@callbacks = "spacy-elmo.require_vectors.v1"\n'


def vectors_config(base_text: str, base_name: str) -> str:
    """``base_text`` (the config ``base_name``.cfg) with static vectors required and turned on."""
    lines = base_text.split("\n", 1)
    body = lines[1] if lines[0].startswith("#") else base_text
    header = (
        f"# NEEDS STATIC VECTORS: {base_name}.cfg plus floret static vectors in MultiHashEmbed (include_static_vectors).\n"
        f"# Pass a spaCy vectors directory with --paths.vectors (spacy init vectors LANG FILE DIR --mode floret;\n"
        f"# the project's vectors step makes one from the Wikipedia text the default biLM saw).\n"
    )
    if body.count("include_static_vectors = false") != 1:
        raise ValueError(f"{base_name}.cfg: expected one 'include_static_vectors = false'")
    body = body.replace("include_static_vectors = false", "include_static_vectors = true")
    if "\nbefore_init = null\n" in body:
        body = body.replace("\nbefore_init = null\n", "\n", 1)
        body = body.replace("[initialize.components]\n", f"[initialize.components]\n\n[initialize.before_init]\n{REQUIRE}", 1)
    else:
        marker = "[initialize.before_init]\n"
        start = body.index(marker) + len(marker)
        end = body.index("\n", start) + 1
        chained = body[start:end]
        body = body[:start] + REQUIRE + "\n[initialize.before_init.also]\n" + chained + body[end:]
    return header + body


def main() -> None:
    for base in BASES:
        text = vectors_config((CONFIGS / f"{base}.cfg").read_text(encoding="utf-8"), base)
        (CONFIGS / f"{base}_vectors.cfg").write_text(text, encoding="utf-8")
        print(f"configs/{base}_vectors.cfg")


if __name__ == "__main__":
    main()
