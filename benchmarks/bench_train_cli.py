"""Whole ``spacy train`` runs of the shipped NER configs with a published biLM architecture:
wall time of a first and a second run (another seed), words/s of each epoch and peak RSS,
against the baseline without ELMo, printed as a Markdown table.

Each run is ``python -m spacy train`` in a fresh process on the first ``--sentences``
sentences of CoNLL-2003 train and the first ``--dev`` of dev (converted with ``spacy convert``,
one sentence per doc), for ``--epochs`` epochs (``--training.max_epochs``, no step limit).
The ELMo config is ``configs/ner_elmo.cfg`` with only ``weights``/``options`` set to the
architecture's synthetic weights (``../shared/bench/make_weights.py`` seed 0); its layer
store is emptied before the first run of each thread count (``--store``), so run 1 pays for
the biLM and run 2 reads what run 1 stored. Thread counts are set with ``OMP_NUM_THREADS``
(torch and BLAS). Peak RSS is the run's ``ru_maxrss`` from ``wait4`` (the process and every
child it waited for). Epoch words/s: the corpus's words over the time from the epoch's first
update to the next epoch's (the last epoch: to the final save), evaluations and checkpoint
saves included; "first update" is when the first update started (imports, loading,
``initialize`` and the store's pre-fill before it).

    python benchmarks/bench_train_cli.py --arch original --sentences 6000 --dev 500 --threads 2,1
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import spacy
from spacy.util import registry

REPO = Path(__file__).resolve().parents[1]
CLOCK_ENV = "SPACY_ELMO_BENCH_CLOCK"


@registry.callbacks("spacy-elmo-bench.epoch_clock.v1")
def epoch_clock() -> Callable[[Any, Dict[str, Any]], None]:
    """A ``before_update`` callback writing (time, epoch) of each epoch's first update to
    ``$SPACY_ELMO_BENCH_CLOCK`` (JSON lines); changes nothing in training."""
    path = Path(os.environ[CLOCK_ENV])
    last = {"epoch": -1}

    def before_update(nlp: Any, info: Dict[str, Any]) -> None:
        if info["epoch"] != last["epoch"]:
            last["epoch"] = info["epoch"]
            with path.open("a", encoding="utf-8") as file:
                file.write(json.dumps({"event": "epoch", "epoch": info["epoch"], "time": time.time()}) + "\n")

    return before_update


@registry.callbacks("spacy-elmo-bench.save_clock.v1")
def save_clock(inner: Optional[Callable[[Any], Any]] = None) -> Callable[[Any], Any]:
    """A ``before_to_disk`` callback writing the time of each save (the last is the final one),
    then calling the config's own ``before_to_disk`` (``inner``) unchanged."""
    path = Path(os.environ[CLOCK_ENV])

    def before_to_disk(nlp: Any) -> Any:
        with path.open("a", encoding="utf-8") as file:
            file.write(json.dumps({"event": "save", "time": time.time()}) + "\n")
        return inner(nlp) if inner is not None else nlp

    return before_to_disk


def make_weights(shared: Path, workdir: Path, arch: str) -> Path:
    """``workdir/<arch>/``: synthetic seed-0 weights of a published architecture (kept between runs)."""
    from spacy_elmo import ElmoBiLM

    folder = workdir / arch
    if (folder / "weights.hdf5").is_file():
        return folder
    raw = workdir / f"{arch}-raw.hdf5"
    options = shared / "bench" / f"{arch}_options.json"
    subprocess.run([sys.executable, str(shared / "bench" / "make_weights.py"), str(options), str(raw), "--seed", "0"], check=True)
    ElmoBiLM.from_files(options, raw).save(folder)
    raw.unlink()
    return folder


def conll_subset(source: Path, workdir: Path, name: str, n_sentences: int) -> Path:
    """The first ``n_sentences`` of a CoNLL-2003 file as ``workdir/<name>.spacy``, one sentence per doc."""
    target = workdir / f"{name}.spacy"
    if target.is_file():
        return target
    kept: List[str] = []
    sentences = 0
    for line in source.read_text(encoding="utf-8").split("\n"):
        kept.append(line)
        if not line.strip() and len(kept) > 1 and kept[-2].strip() and not kept[-2].startswith("-DOCSTART-"):
            sentences += 1
            if sentences >= n_sentences:
                break
    iob = workdir / f"{name}.iob"
    iob.write_text("\n".join(kept) + "\n", encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "spacy", "convert", str(iob), str(workdir), "--converter", "conll", "-n", "1"],
        check=True,
        capture_output=True,
    )
    iob.unlink()
    return target


def corpus_words(path: Path) -> int:
    from spacy.tokens import DocBin

    return sum(len(doc) for doc in DocBin().from_disk(path).get_docs(spacy.blank("en").vocab))


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def _wrapped_before_to_disk(config: Path) -> Dict[str, Any]:
    """The save clock around the config's own ``[training.before_to_disk]`` (kept as it is)."""
    inner = spacy.util.load_config(config, interpolate=False)["training"].get("before_to_disk")
    return {"@callbacks": "spacy-elmo-bench.save_clock.v1", **({"inner": dict(inner)} if inner else {})}


def train_once(
    config: Path, overrides: List[str], workdir: Path, label: str, threads: int, seed: int, epochs: int, words: int
) -> Dict[str, Any]:
    """One ``spacy train`` run in a fresh process: wall time, epochs, peak RSS."""
    output = workdir / "out" / label
    shutil.rmtree(output, ignore_errors=True)
    clock = workdir / f"clock-{label}.jsonl"
    clock.unlink(missing_ok=True)
    threads_env = {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env = {**os.environ, **threads_env, CLOCK_ENV: str(clock)}
    command = [
        sys.executable, "-m", "spacy", "train", str(config), "--output", str(output),
        "--code", str(Path(__file__).resolve()),
        "--training.max_epochs", str(epochs), "--training.max_steps", "0", "--training.seed", str(seed),
        "--training.before_update", '{"@callbacks": "spacy-elmo-bench.epoch_clock.v1"}',
        "--training.before_to_disk", json.dumps(_wrapped_before_to_disk(config)),
        *overrides,
    ]  # fmt: skip
    log = (workdir / f"log-{label}.txt").open("w", encoding="utf-8")
    start = time.time()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.time() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if process.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({process.returncode}); see {log.name}")
    events = [json.loads(line) for line in clock.read_text(encoding="utf-8").splitlines()]
    starts = [e["time"] for e in events if e["event"] == "epoch"]
    end = max(e["time"] for e in events if e["event"] == "save")
    bounds = starts + [end]
    speeds = [words / (bounds[i + 1] - bounds[i]) for i in range(len(starts))]
    return {"wall": wall, "first_update": starts[0] - start, "speeds": speeds, "rss_mib": usage.ru_maxrss / 1024}


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{cpu} ({os.cpu_count()} logical cores)"


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="original", choices=("small", "medium", "original"))
    parser.add_argument("--sentences", type=int, default=6000)
    parser.add_argument("--dev", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", default="2,1", help="comma-separated thread counts")
    parser.add_argument("--settings", default="baseline,elmo", help="comma-separated subset of: baseline,elmo")
    parser.add_argument("--workdir", type=Path, required=True, help="runs, corpora and weights (outside the repository)")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="also write the printed tables into the train-cli-benchmark block of docs/speed.md",
    )
    parser.add_argument("--store", type=Path, default=None, help="the ELMo layer store (default: WORKDIR/store; emptied)")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("SPACY_ELMO_SHARED") or REPO.parent / "shared"))
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    store = (args.store or workdir / "store").resolve()
    conll = args.shared / "data" / "conll2003"
    train = conll_subset(conll / "train.txt", workdir, f"train{args.sentences}", args.sentences)
    dev = conll_subset(conll / "dev.txt", workdir, f"dev{args.dev}", args.dev)
    words = corpus_words(train)
    weights = make_weights(args.shared, workdir, args.arch) if "elmo" in args.settings else None
    paths = ["--paths.train", str(train), "--paths.dev", str(dev)]
    load = os.getloadavg()
    code_version = commit()
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        baseline_wall: Dict[int, float] = {}
        for setting in args.settings.split(","):
            if setting == "baseline":
                config, overrides = REPO / "configs" / "ner_baseline.cfg", paths
            else:
                config = REPO / "configs" / "ner_elmo.cfg"
                overrides = [*paths, "--components.elmo.model.weights", str(weights)]
                overrides += ["--components.elmo.model.layer_store_dir", str(store)]
                shutil.rmtree(store, ignore_errors=True)
            for run, seed in ((1, 0), (2, 1)):
                label = f"{setting}-t{threads}-run{run}"
                result = train_once(config, overrides, workdir, label, threads, seed, args.epochs, words)
                if setting == "baseline":
                    baseline_wall[run] = result["wall"]
                result.update(setting=setting, threads=threads, run=run, seed=seed)
                result["ratio"] = result["wall"] / baseline_wall[run] if run in baseline_wall else None
                result["store_mib"] = directory_bytes(store) / 2**20 if setting == "elmo" else None
                rows.append(result)
                print(json.dumps(result), file=sys.stderr, flush=True)
    # Imported here: spacy train also loads this file (--code), from where docs_block cannot be found.
    from docs_block import printed_into_docs

    with printed_into_docs("train-cli-benchmark" if args.write_docs else None):
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        print(
            f"{now} · {machine()} · load average at start {load[0]:.1f} · Python {platform.python_version()} · "
            f"spaCy {spacy.__version__} · commit {code_version}\n"
        )
        # The work folder is this machine's: the page names it WORKDIR.
        shown = ["WORKDIR" if arg == str(args.workdir) else arg for arg in (argv or sys.argv[1:])]
        print(f"Command: `{shlex.join(['python', 'benchmarks/bench_train_cli.py', *shown])}`\n")
        print(
            f"Data: the first {args.sentences:,} CoNLL-2003 training sentences ({words:,} words), dev = the first "
            f"{args.dev:,} dev sentences; {args.epochs} epochs; ELMo: `configs/ner_elmo.cfg` with only "
            f"`weights` set to the `{args.arch}` architecture's synthetic seed-0 weights (store emptied before run 1 "
            f"of each thread count); baseline: `configs/ner_baseline.cfg`. Run 2 uses seed 1.\n"
        )
        header = "| config | threads | run | wall time (s) | × baseline | first update at (s) | "
        header += " | ".join(f"epoch {i + 1} words/s" for i in range(args.epochs)) + " | peak RSS (MiB) | store on disk (MiB) |"
        print(header)
        print("|---|---:|---:|---:|---:|---:|" + "---:|" * args.epochs + "---:|---:|")
        for r in rows:
            ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "–"
            store_mib = f"{r['store_mib']:,.0f}" if r["store_mib"] is not None else "–"
            speeds = " | ".join(f"{s:,.0f}" for s in r["speeds"])
            name = "ELMo (`ner_elmo.cfg`)" if r["setting"] == "elmo" else "baseline (`ner_baseline.cfg`)"
            print(
                f"| {name} | {r['threads']} | {r['run']} (seed {r['seed']}) | {r['wall']:,.0f} | {ratio} | "
                f"{r['first_update']:,.0f} | {speeds} | {r['rss_mib']:,.0f} | {store_mib} |"
            )


if __name__ == "__main__":
    main()
