"""Summarise the baseline-vs-ELMo runs as Markdown tables and two plots.

Reads what the earlier steps wrote: the ``spacy evaluate`` JSONs and speed results in
METRICS_DIR, the trained pipelines in TRAINING_DIR (their configs give seeds and step
limits; the ELMo ones hold each task's learned scalar mix), the biLM record of the
``select-bilm`` step and the exact command lines stored in ``project.lock``. Writes
``comparison.md``, ``scores.png`` and ``mix_weights.png`` to METRICS_DIR. Parts that have
not been run yet are listed as missing, so the summary also works after only the ``ner``
or only the ``textcat`` workflow.
"""

import platform
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import spacy
import srsly
import typer
from spacy.util import load_config
from wasabi import msg

import spacy_elmo
from spacy_elmo.layers.scalar_mix import mix_coefficients

NER_SPLITS = ("dev", "test")
TEXTCAT_TASKS = {"sst5": "SST-5", "sst2": "SST-2"}
ELMO_PIPELINES = {"ner-elmo": "NER (CoNLL-2003)", "sst5-elmo": "SST-5", "sst2-elmo": "SST-2"}
STEPS = [
    "convert-ner",
    "convert-textcat",
    "pretrain",
    "select-bilm",
    "train-ner-baseline",
    "train-ner-elmo",
    "evaluate-ner",
    "train-textcat-baseline",
    "train-textcat-elmo",
    "evaluate-textcat",
    "speed",
]


def read_json(path: Path) -> Optional[Dict[str, Any]]:
    """The JSON object in ``path``, or None if the file does not exist."""
    return srsly.read_json(path) if path.is_file() else None


def pct(value: Optional[float]) -> str:
    """A 0-1 score as a percentage with two decimals ("–" when missing)."""
    return "–" if value is None else f"{100 * value:.2f}"


def delta(baseline: Optional[float], elmo: Optional[float]) -> str:
    """ELMo minus baseline in percentage points, signed."""
    return "–" if baseline is None or elmo is None else f"{100 * (elmo - baseline):+.2f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> List[str]:
    """A Markdown table; ``align`` has one character per column, 'l' or 'r'."""
    rule = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(row) + " |" for row in [list(header), rule, *rows]]


def ner_scores(metrics_dir: Path) -> Dict[Tuple[str, str], Dict[str, Any]]:
    """(system, split) -> the ``spacy evaluate`` JSON of the NER pipelines that have one."""
    found = {}
    for system in ("baseline", "elmo"):
        for split in NER_SPLITS:
            data = read_json(metrics_dir / f"ner-{system}.{split}.json")
            if data is not None:
                found[(system, split)] = data
    return found


def textcat_accuracy(metrics_dir: Path, task: str, system: str, split: str) -> Optional[float]:
    """Accuracy from a per-component ``spacy evaluate`` JSON.

    With exclusive classes spaCy counts every document once, as a true positive of its gold
    class or as a false negative plus a false positive, so micro-averaged P = R = F = accuracy.
    """
    data = read_json(metrics_dir / f"{task}-{system}.{split}.json")
    return None if data is None else data["textcat"]["cats_micro_f"]


def learned_mix(pipeline_dir: Path) -> Optional[Tuple[List[float], float]]:
    """(softmax layer weights, gamma) of the scalar mix inside the pipeline's task component."""
    if not pipeline_dir.is_dir():
        return None
    nlp = spacy.load(pipeline_dir)
    for name, component in nlp.pipeline:
        if nlp.get_pipe_meta(name).factory == "elmo" or not hasattr(component, "model"):
            continue
        for node in component.model.walk():
            if node.name == "elmo-scalar-mix":
                return [float(w) for w in mix_coefficients(node)], float(node.get_param("gamma")[0])
    return None


def layer_names(n_layers: int) -> List[str]:
    """Names of the biLM's output layers: the token layer, then each LSTM layer."""
    return ["token (char CNN)"] + [f"LSTM {i}" for i in range(1, n_layers)]


def training_settings(training_dir: Path) -> List[List[str]]:
    """One row per trained pipeline: its config file's seed, step limit and biLM setting."""
    rows = []
    for config_path in sorted(training_dir.glob("*/model-best/config.cfg")):
        config = load_config(config_path, interpolate=False)
        weights = config["components"].get("elmo", {}).get("model", {}).get("weights", "–")
        name = config_path.parents[1].name
        rows.append([name, str(config["system"]["seed"]), str(config["training"]["max_steps"]), f"`{weights}`"])
    return rows


def lock_commands(smoke: bool) -> List[Tuple[str, List[str]]]:
    """(command name, script lines) of the project steps recorded in project.lock, in workflow
    order: the last run of each (the smoke run runs the same steps on its slice)."""
    lock = srsly.read_yaml("project.lock") if Path("project.lock").is_file() else {}
    steps = (["smoke-slice"] if smoke else []) + STEPS
    return [(step, lock[step]["script"]) for step in steps if step in lock]


def pretrain_summary(metrics: Dict[str, Any]) -> str:
    """The headline numbers of the pretrain step's metrics.json: perplexities, tokens, speed."""
    parts = []
    for split in ("dev", "test"):
        ppl = (metrics.get(split) or {}).get("ppl")
        if ppl is not None:
            parts.append(f"{split} perplexity {ppl:.1f}")
    for key, label in (("steps", "steps"), ("tokens", "training tokens"), ("tokens_per_s", "tokens/s")):
        if isinstance(metrics.get(key), (int, float)):
            parts.append(f"{metrics[key]:,.0f} {label}")
    if metrics.get("device"):
        parts.append(f"on {metrics['device']}")
    return ", ".join(parts)


def portable_paths(text: str, data_dir: Optional[Path]) -> str:
    """``text`` with this machine's paths made portable, so the summary can be published.

    The data directory becomes ``$DATA``, paths inside the repository (the working directory)
    and inside the installed package become relative to them, and the home directory ``~``.
    """
    replacements = []
    if data_dir is not None:
        replacements += [(str(data_dir.resolve()), "$DATA"), (str(data_dir), "$DATA")]
    replacements += [
        (str(Path.cwd().resolve()) + "/", ""),
        (str(Path(spacy_elmo.__file__).resolve().parents[1]) + "/", ""),
        (str(Path.home()), "~"),
    ]
    for path, replacement in replacements:
        if path in ("", ".", "/"):
            continue
        end = "" if path.endswith("/") else r"(?![\w.-])"
        text = re.sub(r"(?<![\w./-])" + re.escape(path) + end, replacement, text)
    return text


def versions() -> str:
    """Versions of the libraries that produced the numbers."""
    from importlib.metadata import version

    return (
        ", ".join(f"{name} {version(name)}" for name in ("spacy", "spacy-elmo", "torch", "thinc"))
        + f", Python {platform.python_version()}"
    )


def ner_section(scores: Dict[Tuple[str, str], Dict[str, Any]]) -> List[str]:
    """Overall P/R/F per split, then per-type F1, baseline vs ELMo with deltas."""
    lines = ["### NER: CoNLL-2003", "", "Entity-level precision, recall and F1 (exact span and type), in %.", ""]
    rows = []
    for split in NER_SPLITS:
        for key, label in (("ents_p", "P"), ("ents_r", "R"), ("ents_f", "F1")):
            base = scores.get(("baseline", split), {}).get(key)
            elmo = scores.get(("elmo", split), {}).get(key)
            rows.append([split, label, pct(base), pct(elmo), delta(base, elmo)])
    lines += table(["split", "metric", "baseline", "ELMo", "Δ"], rows, "llrrr")
    types = sorted({t for data in scores.values() for t in (data.get("ents_per_type") or {})})
    if types:
        lines += ["", "Per-type F1 (%):", ""]
        rows = []
        for entity_type in types:
            row = [entity_type]
            for split in NER_SPLITS:
                base = (scores.get(("baseline", split), {}).get("ents_per_type") or {}).get(entity_type, {}).get("f")
                elmo = (scores.get(("elmo", split), {}).get("ents_per_type") or {}).get(entity_type, {}).get("f")
                row += [pct(base), pct(elmo), delta(base, elmo)]
            rows.append(row)
        header = ["type"] + [f"{split} {system}" for split in NER_SPLITS for system in ("baseline", "ELMo", "Δ")]
        lines += table(header, rows, "l" + "rrr" * len(NER_SPLITS))
    return lines


def textcat_section(metrics_dir: Path) -> List[str]:
    """SST-5 and SST-2 accuracy per split, baseline vs ELMo with deltas."""
    lines = ["### Sentence classification: SST", "", "Sentence-level accuracy (%), trained on sentences only.", ""]
    rows = []
    for task, label in TEXTCAT_TASKS.items():
        for split in ("dev", "test"):
            base = textcat_accuracy(metrics_dir, task, "baseline", split)
            elmo = textcat_accuracy(metrics_dir, task, "elmo", split)
            rows.append([label, split, pct(base), pct(elmo), delta(base, elmo)])
    return lines + table(["task", "split", "baseline", "ELMo", "Δ"], rows, "llrrr")


def mix_section(mixes: Dict[str, Tuple[List[float], float]]) -> List[str]:
    """The layer weights and scale each task learned (which biLM layers it relies on)."""
    n_layers = max(len(weights) for weights, _ in mixes.values())
    lines = [
        "### What each task learned from the biLM",
        "",
        "The task's scalar mix `γ · Σ_j s_j · layer_j` (Peters et al. 2018, eq. 1): softmax weights `s_j` and scale `γ`.",
        "",
    ]
    rows = [[ELMO_PIPELINES[name], *[f"{w:.3f}" for w in weights], f"{gamma:.3f}"] for name, (weights, gamma) in mixes.items()]
    return lines + table(["task", *layer_names(n_layers), "γ"], rows, "l" + "r" * (n_layers + 1))


def speed_section(speed: Dict[str, Any]) -> List[str]:
    """Words/s of each timed pipeline, with its bootstrap 95% interval."""
    lines = [
        "### Speed",
        "",
        f"Words per second on {speed['device']}, annotating `{speed['corpus']}` (biLM layer cache off).",
        "",
    ]
    rows = [
        [
            name,
            f"{result['words_per_second']:.0f}",
            f"{result['ci95_low']:.0f}–{result['ci95_high']:.0f}",
            str(result["batch_size"]),
        ]
        for name, result in speed["pipelines"].items()
    ]
    return lines + table(["pipeline", "words/s", "95% CI", "docs/batch"], rows, "lrrr")


def provenance_section(training_dir: Path, smoke: bool) -> List[str]:
    """What is needed to reproduce the numbers: the biLM, seeds, step limits, commands, versions."""
    lines = ["### How these numbers were made", ""]
    source = read_json(training_dir / "bilm-selected" / "source.json")
    if source:
        lines.append(f"- biLM: `bilm = {source['bilm']}` → `{source['weights']}` (weights md5 `{source['weights_md5']}`).")
    pretrain = read_json(training_dir / "bilm" / "metrics.json")
    if pretrain and source and source["bilm"] == "pretrained":
        lines.append(f"- Pretraining ({training_dir / 'bilm'}): {pretrain_summary(pretrain)}.")
    settings = training_settings(training_dir)
    if settings:
        lines += ["", *table(["pipeline", "seed", "max_steps", "biLM weights"], settings, "lrrl")]
    commands = lock_commands(smoke)
    if commands:
        lines += ["", "<details><summary>Commands, as recorded in <code>project.lock</code></summary>", "", "```"]
        for name, script in commands:
            lines += [f"# {name}", *script]
        lines += ["```", "", "</details>"]
    lines += ["", f"Versions: {versions()}."]
    return lines


def plot_scores(scores: Dict[Tuple[str, str], Dict[str, Any]], metrics_dir: Path, path: Path) -> None:
    """Grouped bars: baseline vs ELMo for every main score that exists."""
    import matplotlib.pyplot as plt

    labels, base, elmo = [], [], []
    for split in NER_SPLITS:
        b, e = scores.get(("baseline", split), {}).get("ents_f"), scores.get(("elmo", split), {}).get("ents_f")
        if b is not None or e is not None:
            labels.append(f"NER F1\n{split}")
            base.append(100 * (b or 0.0))
            elmo.append(100 * (e or 0.0))
    for task, name in TEXTCAT_TASKS.items():
        for split in ("dev", "test"):
            b, e = (textcat_accuracy(metrics_dir, task, system, split) for system in ("baseline", "elmo"))
            if b is not None or e is not None:
                labels.append(f"{name} acc\n{split}")
                base.append(100 * (b or 0.0))
                elmo.append(100 * (e or 0.0))
    positions = range(len(labels))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(labels)), 4.2), layout="constrained")
    for offset, values, name in ((-0.2, base, "baseline (CNN)"), (0.2, elmo, "ELMo")):
        bars = ax.bar([p + offset for p in positions], values, width=0.4, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(list(positions), labels, fontsize=8)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Baseline vs ELMo")
    fig.legend(loc="outside lower center", ncols=2)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_mix(mixes: Dict[str, Tuple[List[float], float]], path: Path) -> None:
    """Grouped bars: each task's softmax weight per biLM layer, γ in the legend."""
    import matplotlib.pyplot as plt

    n_layers = max(len(weights) for weights, _ in mixes.values())
    width = 0.8 / len(mixes)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.8 * n_layers), 4.2), layout="constrained")
    for i, (name, (weights, gamma)) in enumerate(mixes.items()):
        positions = [layer + (i - (len(mixes) - 1) / 2) * width for layer in range(len(weights))]
        ax.bar(positions, weights, width=width, label=f"{ELMO_PIPELINES[name]} (γ = {gamma:.2f})")
    ax.axhline(1 / n_layers, color="grey", linestyle=":", linewidth=1, label="uniform")
    ax.set_xticks(range(n_layers), layer_names(n_layers))
    ax.set_ylabel("softmax weight")
    ax.set_title("Learned scalar mix of the biLM layers")
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(
    metrics_dir: Path = typer.Argument(..., help="Where the evaluate and speed steps wrote their JSON"),
    training_dir: Path = typer.Argument(..., help="Where the trained pipelines are"),
    run: str = typer.Option("full", "--run", help="'smoke' marks the summary as a smoke run (vars.smoke_vars in project.yml)"),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="The project's data directory, written as $DATA in the summary"
    ),
) -> None:
    """Write comparison.md, scores.png and mix_weights.png to ``metrics_dir``."""
    smoke = run == "smoke"
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        msg.fail("matplotlib is needed for the plots", "Install the project extra: pip install -e '.[project]'", exits=1)
    scores = ner_scores(metrics_dir)
    has_textcat = any(
        (metrics_dir / f"{task}-{system}.{split}.json").is_file()
        for task in TEXTCAT_TASKS
        for system in ("baseline", "elmo")
        for split in ("dev", "test")
    )
    if not scores and not has_textcat:
        msg.fail(
            f"No evaluation results in {metrics_dir}",
            "Run the training and evaluation steps first, e.g. `python -m spacy project run ner .`.",
            exits=1,
        )
    mixes = {name: mix for name in ELMO_PIPELINES if (mix := learned_mix(training_dir / name / "model-best")) is not None}
    speed = read_json(metrics_dir / "speed.json")

    lines = ["<!-- Generated by scripts/compare.py (spacy project run compare); edits are overwritten. -->", ""]
    if smoke:
        lines += [
            "> **Smoke run**: a few hundred sentences and tens of training steps, to test the project end to end. The scores mean nothing.",
            "",
        ]
    lines += ner_section(scores) if scores else ["### NER: CoNLL-2003", "", "Not run yet (`python -m spacy project run ner .`)."]
    lines += [""] + (
        textcat_section(metrics_dir)
        if has_textcat
        else ["### Sentence classification: SST", "", "Not run yet (`python -m spacy project run textcat .`)."]
    )
    if mixes:
        lines += [""] + mix_section(mixes)
    if speed:
        lines += [""] + speed_section(speed)
    lines += [""] + provenance_section(training_dir, smoke)
    plots = [metrics_dir / "scores.png"]
    plot_scores(scores, metrics_dir, plots[0])
    if mixes:
        plots.append(metrics_dir / "mix_weights.png")
        plot_mix(mixes, plots[1])
    lines += ["", "Plots: " + ", ".join(f"`{path}`" for path in plots) + "."]
    (metrics_dir / "comparison.md").write_text(portable_paths("\n".join(lines) + "\n", data_dir), encoding="utf-8")
    msg.good(f"Wrote {metrics_dir / 'comparison.md'} and the plots")


if __name__ == "__main__":
    typer.run(main)
