"""Held-out perplexity against training tokens, from one or more pretraining runs' ``log.jsonl``.

Each run's ``eval`` events (dev perplexity every ``eval_every`` steps, test perplexity at the end)
become rows of a Markdown table and points of a PNG. A run that continued another (for example
with ``--training.init_from``) is placed after it with ``--offset`` (the tokens the earlier run
had seen), and extra points measured elsewhere (say, an earlier run whose log is gone) can be
given as ``--point TOKENS:SPLIT:PPL``.

    python scripts/pretrain_curve.py run/log.jsonl --offset 8976961 \\
        --point 3348033:dev:255.1 --point 8976961:dev:167.1 --point 8976961:test:146.9 \\
        --markdown curve.md --plot curve.png
"""

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import typer
from wasabi import msg

Point = Tuple[int, str, float]


def read_points(log: Path, offset: int) -> List[Point]:
    """(tokens, split, perplexity) of every eval event in a run's log.

    A continued run's eval before its first step is left out: it measures the run's fresh
    softmax, not the biLM it continues.
    """
    points: List[Point] = []
    for line in log.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event.get("event") != "eval" or (offset and not event.get("tokens")):
            continue
        for split in ("dev", "test"):
            result = event.get(split)
            if isinstance(result, dict) and result.get("ppl") is not None:
                points.append((offset + int(event["tokens"]), split, float(result["ppl"])))
    return points


def parse_point(text: str) -> Point:
    """``TOKENS:SPLIT:PPL`` from the command line."""
    try:
        tokens, split, ppl = text.split(":")
        return int(tokens), split, float(ppl)
    except ValueError:
        msg.fail(f"--point {text!r}: expected TOKENS:SPLIT:PPL, e.g. 8976961:test:146.9", exits=1)
        raise


def table(points: List[Point]) -> List[str]:
    """A Markdown table: one row per token count, a column per split."""
    by_tokens: Dict[int, Dict[str, float]] = {}
    for tokens, split, ppl in points:
        by_tokens.setdefault(tokens, {})[split] = ppl
    splits = sorted({split for _, split, _ in points})
    lines = ["| training tokens | " + " | ".join(f"{s} perplexity" for s in splits) + " |", "|---:|" + "---:|" * len(splits)]
    for tokens in sorted(by_tokens):
        cells = [f"{by_tokens[tokens][s]:.1f}" if s in by_tokens[tokens] else "–" for s in splits]
        lines.append(f"| {tokens:,} | " + " | ".join(cells) + " |")
    return lines


def plot(points: List[Point], target: Path) -> None:
    """Perplexity against training tokens, one line per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for split in sorted({split for _, split, _ in points}):
        xs, ys = zip(*sorted((t, p) for t, s, p in points if s == split))
        ax.plot([x / 1e6 for x in xs], ys, marker="o", label=split)
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("perplexity (full softmax)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("biLM held-out perplexity")
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=120)
    plt.close(fig)


def main(
    log: List[Path] = typer.Argument(..., exists=True, dir_okay=False, help="log.jsonl of one or more runs"),
    offset: List[int] = typer.Option([], help="Tokens seen before each run (one per log, in order; default 0)"),
    point: List[str] = typer.Option([], help="Extra TOKENS:SPLIT:PPL points"),
    markdown: Optional[Path] = typer.Option(None, help="Write the table here (else print it)"),
    plot_path: Optional[Path] = typer.Option(None, "--plot", help="Write the PNG here"),
) -> None:
    """Table and plot of held-out perplexity against training tokens."""
    if offset and len(offset) != len(log):
        msg.fail(f"Give one --offset per log ({len(log)} logs, {len(offset)} offsets)", exits=1)
    points = [parse_point(p) for p in point]
    for i, path in enumerate(log):
        points += read_points(path, offset[i] if offset else 0)
    if not points:
        msg.fail("No perplexity found: the logs have no eval events and no --point was given", exits=1)
    lines = table(points)
    if markdown is None:
        print("\n".join(lines))
    else:
        markdown.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if plot_path is not None:
        plot(points, plot_path)


if __name__ == "__main__":
    typer.run(main)
