"""``python -m spacy_elmo pretrain CONFIG OUTPUT_DIR [--resume | --overwrite] [--section.key VALUE ...]``."""

import argparse
import sys
from typing import List, Optional

from ..errors import ElmoError
from .config import help_epilog, parse_overrides
from .errors import TrainingInterrupted
from .interrupt import StopAtOnce

INTERRUPTED_EXIT = 130

DESCRIPTION = """\
Pretrain (or fine-tune) an ELMo biLM on raw text. Writes OUTPUT_DIR/model-best and
OUTPUT_DIR/model-last (options.json + weights.hdf5 in the published layout, for
nlp.add_pipe("elmo", config={"model": {"weights": "OUTPUT_DIR/model-best"}})), plus
vocab.txt, log.jsonl, checkpoint-<step>/ (the newest two) and metrics.json. OUTPUT_DIR
must be empty or new unless --resume or --overwrite is given. Ctrl-C or SIGTERM (what job
schedulers send before killing) stops after the current step with a checkpoint (exit status
130); a second one aborts at once. For
several processes (data parallel, gloo on CPU / nccl on CUDA) run the same command under
`torchrun --nproc_per_node N -m spacy_elmo pretrain ...`."""


def build_parser(prog: str = "python -m spacy_elmo pretrain") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, epilog=help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "config", help="config file (python -m spacy_elmo config pretrain_small pretrain_small.cfg writes the shipped one)"
    )
    parser.add_argument("output_dir", help="directory for the vocabulary, logs, checkpoint and exported models")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue exactly where the run in OUTPUT_DIR stopped (its newest intact checkpoint)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in a non-empty OUTPUT_DIR: replaces the outputs of an earlier run there, keeps every other file",
    )
    parser.add_argument(
        "--gpu-id", type=int, default=None, help="CUDA device (default: 0 if CUDA is available, else the CPU); -1 forces the CPU"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads per process (default: torch's choice; cores / processes under torchrun)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log.jsonl is written regardless)")
    parser.add_argument(
        "--return-memory",
        action="store_true",
        help="let the C allocator hand freed memory back to the OS (by default this command keeps it for reuse, which makes CPU "
        "training much faster on Linux with glibc, where handing it back means unmapping large blocks and faulting them in "
        "again at every step)",
    )
    return parser


def _stopped_before_training(by: str, resume: bool) -> str:
    """What a stop outside the training loop (setup, export) tells the user to do next."""
    if resume:
        return (
            f"stopped by {by} outside a training step; the checkpoints are as they were: run the same command again to continue"
        )
    return (
        f"stopped by {by} outside a training step; nothing after the last checkpoint was kept: run the same "
        f"command again with --resume if OUTPUT_DIR holds a checkpoint, otherwise with --overwrite"
    )


def main(argv: Optional[List[str]] = None, prog: str = "python -m spacy_elmo pretrain") -> int:
    """Parse the command line, run :func:`spacy_elmo.pretrain.pretrain`; 0 on success, 1 on a reported error, 130 on Ctrl-C or SIGTERM.

    Under torchrun the process ends here with that code (:func:`exit_worker`) rather than returning.
    """
    code = _run(argv, prog)
    from .distributed import exit_worker, one_of_several_processes

    if one_of_several_processes():
        exit_worker(code)
    return code


def _run(argv: Optional[List[str]], prog: str) -> int:
    parser = build_parser(prog)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        with StopAtOnce(lambda by: TrainingInterrupted(_stopped_before_training(by, args.resume))):
            overrides = parse_overrides(rest)
            from ..memory import keep_freed_memory
            from .trainer import pretrain

            if not args.return_memory:
                keep_freed_memory()
            pretrain(
                args.config,
                args.output_dir,
                overrides=overrides,
                resume=args.resume,
                overwrite=args.overwrite,
                gpu_id=args.gpu_id,
                threads=args.threads,
                progress=not args.no_progress,
            )
    except ElmoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as stop:
        print(f"interrupted: {stop}", file=sys.stderr)
        return INTERRUPTED_EXIT
    except KeyboardInterrupt:
        print(
            "aborted by a second Ctrl-C or SIGTERM: the steps since the last checkpoint are lost (--resume continues from it, if there is one)",
            file=sys.stderr,
        )
        return INTERRUPTED_EXIT
    return 0
