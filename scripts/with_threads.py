"""Run a module's command line as ``OMP_NUM_THREADS=N python -m MODULE ARGS...`` would, portably.

    python scripts/with_threads.py 1 spacy evaluate training/demo/ner-elmo/model-best corpus/demo/dev.spacy

The variable is set before anything imports torch or NumPy, so their thread pools start with
N threads (0 leaves the environment as it is). On a machine shared with other jobs one
thread is much faster for the biLM (docs/speed.md, "Threads"); weasel runs project commands without
a shell, so a ``VAR=value`` prefix cannot be written in ``project.yml``.
"""

import os
import runpy
import sys


def main() -> None:
    """Set OMP_NUM_THREADS from the first argument, then run the module named by the second."""
    if len(sys.argv) < 3 or not sys.argv[1].isdigit():
        sys.exit("usage: python scripts/with_threads.py N MODULE [ARGS...]   (N = threads, 0 = leave as is)")
    threads, module = int(sys.argv[1]), sys.argv[2]
    if threads > 0:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
