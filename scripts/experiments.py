"""Baseline-vs-ELMo experiments over several seeds and training-set sizes.

``run`` trains every (system, training fraction, seed) of one task with ``spacy train``, each
in its own process, selects the model on dev (spaCy's model-best), evaluates it on dev and
test, and writes one JSON per run into ``OUT_DIR``: scores, training sentences and words,
training wall time and words/s. Runs whose JSON exists with the same settings are skipped,
so an interrupted experiment continues where it stopped. Fractions take nested prefixes of
one seeded shuffle of the training sentences (the same sentences for every system and seed),
regrouped into documents of ``--n-sents`` sentences.

``report`` reads those JSONs and writes a Markdown summary (mean ± std over seeds and every
seed, dev and test, ELMo minus baseline) and, for tasks run at several fractions, a learning
curve plot (test score against training sentences, log x, error bars = std over seeds).

    python scripts/experiments.py run ner metrics/runs/ner training/runs/ner \\
        --train corpus/conll2003/train.spacy --dev corpus/conll2003/dev.spacy --test corpus/conll2003/test.spacy \\
        --config baseline=configs/ner_baseline.cfg --config elmo=configs/ner_elmo.cfg \\
        --seeds 3 --fractions 0.01,0.05,0.1,0.25,1 --max-steps 3000 --bilm training/bilm-selected
    python scripts/experiments.py report metrics/runs metrics/experiments.md --plot metrics/ner_curve.png
"""

import json
import math
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import spacy
import typer
from spacy.tokens import Doc, DocBin
from wasabi import msg

from spacy_elmo.files import write_text_atomic

app = typer.Typer(add_completion=False, no_args_is_help=True)

LOGGER_NAME = "spacy-elmo-experiments.RunLogger.v1"
RESULT_VERSION = 1


# --- training data -------------------------------------------------------------------


def sentences(path: Path, nlp: spacy.Language) -> List[Doc]:
    """Every sentence of a .spacy corpus as its own Doc (entities and cats kept)."""
    out: List[Doc] = []
    for doc in DocBin().from_disk(path).get_docs(nlp.vocab):
        if doc.has_annotation("SENT_START"):
            out.extend(sent.as_doc() for sent in doc.sents)
        else:
            out.append(doc)
    return out


def regroup(docs: Sequence[Doc], n_sents: int) -> List[Doc]:
    """Consecutive sentences joined into documents of ``n_sents`` (1 = one doc per sentence)."""
    if n_sents <= 1:
        return list(docs)
    return [Doc.from_docs(list(docs[i : i + n_sents])) for i in range(0, len(docs), n_sents)]


def subsample(train: Path, fraction: float, target: Path, n_sents: int, lang: str) -> Tuple[int, int]:
    """Write the first ``fraction`` of the shuffled training sentences to ``target``; (sentences, words)."""
    nlp = spacy.blank(lang)
    sents = sentences(train, nlp)
    order = list(range(len(sents)))
    random.Random(0).shuffle(order)
    keep = max(1, math.ceil(fraction * len(sents)))
    chosen = [sents[i] for i in sorted(order[:keep])]
    target.parent.mkdir(parents=True, exist_ok=True)
    DocBin(docs=regroup(chosen, n_sents), store_user_data=True).to_disk(target)
    return len(chosen), sum(len(doc) for doc in chosen)


def corpus_size(path: Path, lang: str) -> Tuple[int, int]:
    """(sentences, words) of a .spacy corpus."""
    sents = sentences(path, spacy.blank(lang))
    return len(sents), sum(len(doc) for doc in sents)


# --- one run ---------------------------------------------------------------------------


@spacy.registry.loggers(LOGGER_NAME)
def run_logger(log_path: str, progress_bar: bool = False) -> Callable:
    """spaCy's console logger, plus the loop's words seen and seconds written to ``log_path``."""
    console = spacy.registry.loggers.get("spacy.ConsoleLogger.v3")(progress_bar="train" if progress_bar else None)

    def setup(nlp: spacy.Language, stdout: Any = sys.stdout, stderr: Any = sys.stderr) -> Tuple[Callable, Callable]:
        log_step, finalize = console(nlp, stdout, stderr)
        last: Dict[str, Any] = {}

        def log(info: Optional[Dict[str, Any]]) -> None:
            log_step(info)
            if info is not None:
                last.update(step=info["step"], words=info["words"], seconds=info["seconds"])

        def close() -> None:
            finalize()
            Path(log_path).write_text(json.dumps(last) + "\n", encoding="utf-8")

        return log, close

    return setup


def train_one(config: Path, output: Path, overrides: Dict[str, Any], gpu_id: int) -> Dict[str, Any]:
    """``spacy train`` in this process; returns the loop's last step, words seen and wall seconds."""
    from spacy.cli.train import train

    log_path = output / "train_log.json"
    output.mkdir(parents=True, exist_ok=True)
    overrides = {**overrides, "training.logger": {"@loggers": LOGGER_NAME, "log_path": str(log_path)}}
    start = time.perf_counter()
    train(config, output, use_gpu=gpu_id, overrides=overrides)
    wall = time.perf_counter() - start
    info = json.loads(log_path.read_text(encoding="utf-8"))
    info["wall_seconds"] = wall
    return info


def scores(pipeline: Path, corpus: Path, gpu_id: int) -> Dict[str, Any]:
    """``spacy evaluate``'s scores of a pipeline on a corpus (NER P/R/F per type, textcat accuracy).

    A frozen ``elmo`` component reads and fills its layer store here too (``layer_store =
    "always"``): every seed, fraction and config of a task evaluates the same dev and test
    sentences, so the biLM runs over them once, not once per run.
    """
    from spacy.training import Corpus

    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    saved = spacy.util.load_config(pipeline / "config.cfg")
    elmo = [name for name, block in saved["components"].items() if block.get("factory") == "elmo"]
    overrides = {f"components.{name}.model.layer_store": "always" for name in elmo}
    nlp = spacy.load(pipeline, config=overrides)
    result = nlp.evaluate(list(Corpus(corpus)(nlp)))
    keep = ("ents_f", "ents_p", "ents_r", "ents_per_type", "cats_micro_f", "cats_macro_f")
    return {key: result[key] for key in keep if key in result}


# --- the commands ----------------------------------------------------------------------


def parse_configs(items: List[str]) -> Dict[str, Path]:
    """``system=path`` pairs from the command line."""
    configs = {}
    for item in items:
        system, sep, path = item.partition("=")
        if not sep or not system or not Path(path).is_file():
            msg.fail(f"--config {item!r}: expected SYSTEM=CONFIG_FILE with an existing file", exits=1)
        configs[system] = Path(path)
    return configs


def fraction_label(fraction: float) -> str:
    """A stable file-name label for a training fraction: 1 -> '1', 0.05 -> '0.05'."""
    return f"{fraction:g}"


@app.command()
def run(
    task: str = typer.Argument(..., help="Task name used in the report (e.g. ner, sst5, sst2)"),
    out_dir: Path = typer.Argument(..., help="Where the per-run result JSONs go"),
    training_dir: Path = typer.Argument(..., help="Where the trained pipelines go (one folder per run)"),
    train: Path = typer.Option(..., exists=True, help="Training corpus (.spacy)"),
    dev: Path = typer.Option(..., exists=True, help="Dev corpus (.spacy): model selection"),
    test: Path = typer.Option(..., exists=True, help="Test corpus (.spacy): reported, never used to select"),
    config: List[str] = typer.Option(..., help="SYSTEM=CONFIG, repeated: e.g. baseline=configs/ner_baseline.cfg"),
    seeds: int = typer.Option(3, min=1, help="Seeds per system (first_seed, first_seed + 1, ...)"),
    first_seed: int = typer.Option(0, help="The first seed"),
    fractions: str = typer.Option("1", help="Comma-separated fractions of the training sentences"),
    n_sents: int = typer.Option(10, min=1, help="Sentences per document after subsampling"),
    max_steps: int = typer.Option(3000, min=1, help="[training] max_steps of every run"),
    eval_frequency: int = typer.Option(200, min=1, help="[training] eval_frequency of every run"),
    bilm: Optional[str] = typer.Option(None, help="[components.elmo.model] weights for configs that have an elmo component"),
    vectors: Optional[str] = typer.Option(
        None, help="[paths] vectors (a spaCy vectors directory) for configs that use static vectors"
    ),
    init_tok2vec: Optional[str] = typer.Option(
        None, help="[paths] init_tok2vec (spacy pretrain weights) for configs with a [pretraining] block"
    ),
    lang: str = typer.Option("en", help="Language of the corpora"),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for the CPU"),
) -> None:
    """Train and evaluate every (system, fraction, seed); skip runs already done."""
    configs = parse_configs(config)
    wanted = [float(f) for f in fractions.split(",") if f.strip()]
    if not wanted or any(not 0 < f <= 1 for f in wanted):
        msg.fail(f"--fractions {fractions!r}: expected comma-separated numbers in (0, 1]", exits=1)
    out_dir.mkdir(parents=True, exist_ok=True)
    for fraction in wanted:
        label = fraction_label(fraction)
        if fraction < 1:
            train_path = training_dir / "data" / f"train.{label}.spacy"
            n_train, words = subsample(train, fraction, train_path, n_sents, lang)
        else:
            train_path = train
            n_train, words = corpus_size(train, lang)
        for system, config_path in configs.items():
            for seed in range(first_seed, first_seed + seeds):
                settings = {
                    "version": RESULT_VERSION,
                    "task": task,
                    "system": system,
                    "config": str(config_path),
                    "fraction": fraction,
                    "seed": seed,
                    "max_steps": max_steps,
                    "eval_frequency": eval_frequency,
                    "train_sentences": n_train,
                    "train_words": words,
                    "bilm": bilm if "elmo" in spacy.util.load_config(config_path)["components"] else None,
                    **({"vectors": vectors} if vectors and _uses_static_vectors(config_path) else {}),
                    **({"init_tok2vec": init_tok2vec} if init_tok2vec and _uses_init_tok2vec(config_path) else {}),
                }
                result_path = out_dir / f"{task}.{system}.f{label}.seed{seed}.json"
                if result_path.is_file() and _same_settings(result_path, settings):
                    msg.info(f"{result_path.name}: done before, skipped")
                    continue
                msg.divider(f"{task} {system} fraction {label} seed {seed} ({n_train:,} sentences)")
                result = _run_in_subprocess(settings, config_path, train_path, dev, test, training_dir, gpu_id)
                write_text_atomic(result_path, json.dumps({**settings, **result}, indent=2) + "\n")
                msg.good(f"{result_path.name}: dev {headline(result['dev']):.2f}, test {headline(result['test']):.2f}")


def _uses_static_vectors(config_path: Path) -> bool:
    """Whether a config's text turns static vectors on (a MultiHashEmbed with include_static_vectors = true)."""
    return "include_static_vectors = true" in config_path.read_text(encoding="utf-8")


def _uses_init_tok2vec(config_path: Path) -> bool:
    """Whether a config starts a tok2vec component from ``spacy pretrain`` weights (it has a [pretraining] block)."""
    return bool(spacy.util.load_config(config_path).get("pretraining"))


def _same_settings(path: Path, settings: Dict[str, Any]) -> bool:
    """Whether the result JSON at ``path`` was made with exactly these settings."""
    old = json.loads(path.read_text(encoding="utf-8"))
    return all(old.get(key) == value for key, value in settings.items())


def _run_in_subprocess(
    settings: Dict[str, Any], config: Path, train: Path, dev: Path, test: Path, training_dir: Path, gpu_id: int
) -> Dict[str, Any]:
    """Train and evaluate one run in a fresh process (isolated memory and random state)."""
    label = f"{settings['task']}-{settings['system']}-f{fraction_label(settings['fraction'])}-seed{settings['seed']}"
    output = training_dir / label
    job = {
        "config": str(config),
        "output": str(output),
        "gpu_id": gpu_id,
        "dev": str(dev),
        "test": str(test),
        "overrides": {
            "paths.train": str(train),
            "paths.dev": str(dev),
            "system.seed": settings["seed"],
            "training.max_steps": settings["max_steps"],
            "training.eval_frequency": settings["eval_frequency"],
            **({"components.elmo.model.weights": settings["bilm"]} if settings["bilm"] else {}),
            **({"paths.vectors": settings["vectors"]} if settings.get("vectors") else {}),
            **({"paths.init_tok2vec": settings["init_tok2vec"]} if settings.get("init_tok2vec") else {}),
        },
    }
    subprocess.run([sys.executable, __file__, "one", json.dumps(job)], check=True)
    return json.loads((output / "result.json").read_text(encoding="utf-8"))


@app.command(hidden=True)
def one(job_json: str) -> None:
    """Internal: one training run and its evaluation, described by a JSON job."""
    job = json.loads(job_json)
    output = Path(job["output"])
    info = train_one(Path(job["config"]), output, job["overrides"], job["gpu_id"])
    best = output / "model-best"
    result = {
        "dev": scores(best, Path(job["dev"]), job["gpu_id"]),
        "test": scores(best, Path(job["test"]), job["gpu_id"]),
        "steps": info["step"],
        "words_seen": info["words"],
        "train_seconds": info["wall_seconds"],
        "words_per_second": info["words"] / max(info["seconds"], 1),
    }
    write_text_atomic(output / "result.json", json.dumps(result, indent=2) + "\n")


# --- the report ------------------------------------------------------------------------


def headline(result_scores: Dict[str, Any]) -> Optional[float]:
    """The task's main score in percent: entity F1, else accuracy (micro F of exclusive classes)."""
    for key in ("ents_f", "cats_micro_f"):
        if result_scores.get(key) is not None:
            return 100 * float(result_scores[key])
    return None


def mean_std(values: Sequence[float]) -> str:
    """``mean ± std`` (sample std; 0 for a single value) with two decimals."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def load_results(metrics_dir: Path) -> List[Dict[str, Any]]:
    """Every result JSON under ``metrics_dir``."""
    found = []
    for path in sorted(metrics_dir.rglob("*.seed*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") == RESULT_VERSION:
            found.append(data)
    return found


def grouped(results: Sequence[Dict[str, Any]]) -> Iterator[Tuple[Tuple[str, float], Dict[str, List[Dict[str, Any]]]]]:
    """((task, fraction), {system: runs sorted by seed}) in a stable order."""
    keys = sorted({(r["task"], r["fraction"]) for r in results})
    for task, fraction in keys:
        systems: Dict[str, List[Dict[str, Any]]] = {}
        for r in sorted(results, key=lambda r: r["seed"]):
            if r["task"] == task and r["fraction"] == fraction:
                systems.setdefault(r["system"], []).append(r)
        yield (task, fraction), systems


def report_lines(results: Sequence[Dict[str, Any]]) -> List[str]:
    """The Markdown summary: one table per task, a row per (fraction, system)."""
    lines = [
        "Scores in percent (NER: entity F1; textcat: accuracy), mean ± sample std over seeds, then every seed.",
        "Each run's model was selected on dev (spaCy's model-best); test was never used to select or tune.",
        "Training words/s and wall time include spaCy's periodic dev evaluations.",
        "",
    ]
    current = None
    for (task, _fraction), systems in grouped(results):
        if task != current:
            if current is not None:
                lines.append("")
            current = task
            lines += [
                f"### {task}",
                "",
                "| train sentences | system | seeds | dev | test | test per seed | Δ test vs baseline | every seed above every baseline seed | words/s | wall s/run |",
                "|---:|---|---:|---:|---:|---|---:|---|---:|---:|",
            ]
        base = [headline(r["test"]) for r in systems.get("baseline", [])]
        for system, runs in systems.items():
            dev = [headline(r["dev"]) for r in runs]
            test = [headline(r["test"]) for r in runs]
            compared = system != "baseline" and bool(base)
            gain = f"{statistics.mean(test) - statistics.mean(base):+.2f}" if compared else "–"
            above = ("yes" if min(test) > max(base) else "no") if compared else "–"
            wps = statistics.mean(r["words_per_second"] for r in runs)
            wall = statistics.mean(r["train_seconds"] for r in runs)
            lines.append(
                f"| {runs[0]['train_sentences']:,} | {system} | {len(runs)} | {mean_std(dev)} | {mean_std(test)} | "
                f"{', '.join(f'{t:.2f}' for t in test)} | {gain} | {above} | {wps:,.0f} | {wall:,.0f} |"
            )
    lines.append("")
    return lines


def plot_curve(results: Sequence[Dict[str, Any]], task: str, target: Path) -> bool:
    """Test score against training sentences (log x, std error bars); False if fewer than two fractions."""
    runs = [r for r in results if r["task"] == task]
    if len({r["fraction"] for r in runs}) < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for system in sorted({r["system"] for r in runs}):
        points = sorted({r["train_sentences"] for r in runs if r["system"] == system})
        means, stds = [], []
        for n in points:
            values = [headline(r["test"]) for r in runs if r["system"] == system and r["train_sentences"] == n]
            means.append(statistics.mean(values))
            stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        ax.errorbar(points, means, yerr=stds, marker="o", capsize=3, label=system)
    ax.set_xscale("log")
    ax.set_xlabel("training sentences (log scale)")
    ax.set_ylabel("test score (%)")
    ax.set_title(f"{task}: learning curve (mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)
    return True


@app.command()
def report(
    metrics_dir: Path = typer.Argument(..., help="Folder holding the run JSONs (searched recursively)"),
    output: Path = typer.Argument(..., help="The Markdown summary to write"),
    plot: Optional[Path] = typer.Option(None, help="Learning-curve PNG for the task run at several fractions"),
    curve_task: str = typer.Option("ner", help="Which task's learning curve to plot"),
    plot_link: Optional[str] = typer.Option(
        None, help="Where the summary's image link points (default: the plot's file name, beside the summary)"
    ),
) -> None:
    """Summarise the runs: mean ± std and every seed, and a learning curve."""
    results = load_results(metrics_dir)
    if not results:
        msg.fail(f"No run results under {metrics_dir}", "Run `python scripts/experiments.py run ...` first.", exits=1)
    lines = report_lines(results)
    if plot is not None and plot_curve(results, curve_task, plot):
        lines += [f"![learning curve]({plot_link or plot.name})", ""]
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output, "\n".join(lines))
    msg.good(f"{len(results)} runs summarised in {output}")


if __name__ == "__main__":
    app()
