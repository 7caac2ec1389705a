"""Compare the demo's two NER pipelines: a table on stdout, ``comparison.md`` and a plot.

Reads the ``spacy evaluate`` JSONs in METRICS_DIR (``ner-baseline.json``, ``ner-elmo.json``)
and the ``timing.json`` that ``scripts/demo_train.py`` wrote beside each trained pipeline in
TRAINING_DIR. Prints (and writes to ``METRICS_DIR/comparison.md``) entity-level F1, P and R
per system, F1 per label, the training wall time and training words/s; draws the F1 scores
to ``METRICS_DIR/scores.png``.
"""

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import srsly
import typer
from wasabi import msg

SYSTEMS = {"ner-baseline": "baseline (CNN)", "ner-elmo": "ELMo"}


def read_json(path: Path) -> Optional[Dict[str, Any]]:
    """The JSON object in ``path``, or None if there is no such file."""
    return srsly.read_json(path) if path.is_file() else None


def pct(value: Optional[float]) -> str:
    """A 0-1 score as a percentage ("–" when missing)."""
    return "–" if value is None else f"{100 * value:.1f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """A Markdown table, first column left-aligned and the others right-aligned."""
    rule = ["---"] + ["---:"] * (len(header) - 1)
    return ["| " + " | ".join(cells) + " |" for cells in [list(header), rule, *rows]]


def labels_of(scores: Dict[str, Dict[str, Any]]) -> List[str]:
    """Every entity label that either system was scored on, sorted."""
    return sorted({label for data in scores.values() for label in (data.get("ents_per_type") or {})})


def report_lines(scores: Dict[str, Dict[str, Any]], timings: Dict[str, Dict[str, Any]], dev_path: str) -> List[str]:
    """The comparison as Markdown: overall scores with training cost, then F1 per label."""
    lines = [f"Entity-level scores on `{dev_path}` (exact span and label, %).", ""]
    rows = []
    for name, label in SYSTEMS.items():
        data, timing = scores.get(name, {}), timings.get(name, {})
        wall = timing.get("wall_seconds")
        wps = timing.get("words_per_second")
        rows.append(
            [
                label,
                pct(data.get("ents_f")),
                pct(data.get("ents_p")),
                pct(data.get("ents_r")),
                "–" if wall is None else f"{wall:.0f}",
                "–" if wps is None else f"{wps:,.0f}",
            ]
        )
    lines += table(["system", "F1", "P", "R", "training wall time (s)", "training words/s"], rows)
    labels = labels_of(scores)
    if labels:
        rows = [
            [entity, *(pct(((scores.get(name) or {}).get("ents_per_type") or {}).get(entity, {}).get("f")) for name in SYSTEMS)]
            for entity in labels
        ]
        lines += ["", "F1 per label (%):", "", *table(["label", *SYSTEMS.values()], rows)]
    threads = sorted({str(timing.get("threads")) for timing in timings.values()})
    lines += [
        "",
        "Training wall time is the whole training command (initialisation, updates, evaluations, saving); "
        f"words/s counts the words of the training batches over the time spent in updates; torch threads: {', '.join(threads)}.",
    ]
    return lines


def plot_scores(scores: Dict[str, Dict[str, Any]], path: Path) -> None:
    """Grouped bars: overall F1 and F1 per label, baseline beside ELMo."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = ["all", *labels_of(scores)]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    width = 0.8 / len(SYSTEMS)
    for i, (name, label) in enumerate(SYSTEMS.items()):
        data = scores.get(name) or {}
        values = [100 * (data.get("ents_f") or 0.0)] + [
            100 * (((data.get("ents_per_type") or {}).get(group) or {}).get("f") or 0.0) for group in groups[1:]
        ]
        positions = [g + (i - (len(SYSTEMS) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(positions, values, width=width, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(groups)), ["all entities", *groups[1:]])
    ax.set_ylabel("F1 on dev (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Demo NER: baseline vs ELMo")
    fig.legend(loc="outside lower center", ncols=len(SYSTEMS))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(
    metrics_dir: Path = typer.Argument(..., help="Where the evaluate step wrote ner-baseline.json and ner-elmo.json"),
    training_dir: Path = typer.Argument(..., help="Where the trained pipelines (and their timing.json) are"),
    dev_path: str = typer.Option("corpus/demo/dev.spacy", "--dev", help="The evaluation corpus, named in the report"),
) -> None:
    """Print the comparison and write ``comparison.md`` and ``scores.png`` to ``metrics_dir``."""
    scores = {name: data for name in SYSTEMS if (data := read_json(metrics_dir / f"{name}.json")) is not None}
    if not scores:
        msg.fail(
            f"No evaluation results in {metrics_dir}",
            "Run the demo's training and evaluation first: python -m spacy project run demo",
            exits=1,
        )
    timings = {name: data for name in SYSTEMS if (data := read_json(training_dir / name / "timing.json")) is not None}
    lines = report_lines(scores, timings, dev_path)
    print("\n".join(lines))
    (metrics_dir / "comparison.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot_path = metrics_dir / "scores.png"
    try:
        plot_scores(scores, plot_path)
    except ImportError:
        msg.fail("matplotlib is needed for the plot", "Install the project extra: pip install '.[project]'", exits=1)
    msg.good(f"Wrote {metrics_dir / 'comparison.md'} and {plot_path}")


if __name__ == "__main__":
    typer.run(main)
