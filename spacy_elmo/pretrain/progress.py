"""What a long run reports: ``log.jsonl`` lines and a tqdm bar with the ETA by budget."""

import json
import sys
from pathlib import Path
from typing import Any, Callable, ContextManager, Optional

from tqdm import tqdm

from ..files import write_text_atomic
from .config import TrainingConfig

BAR_UNITS = 1000


class RunLog:
    """Appends one JSON object per line to ``log.jsonl`` (main process only).

    Every write runs inside ``guard(path)``, the owner's way of turning a failed write into
    an error that says how to continue.
    """

    def __init__(self, path: Path, enabled: bool, guard: Callable[[Path], ContextManager[None]]) -> None:
        self.path = path
        self.enabled = enabled
        self.guard = guard

    def write(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        with self.guard(self.path), open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"event": event, **fields}) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (work a resumed run is about to redo)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
        with self.guard(self.path):
            write_text_atomic(self.path, "".join(line + "\n" for line in kept))


class ProgressBar:
    """tqdm bar over the budget, with tokens/s, loss, dev perplexity and the ETA."""

    def __init__(self, config: TrainingConfig, enabled: bool) -> None:
        self.config = config
        self.bar = (
            tqdm(total=BAR_UNITS, bar_format="{l_bar}{bar}| {postfix}", desc="pretrain", file=sys.stderr, dynamic_ncols=True)
            if enabled
            else None
        )
        self.dev_ppl: Optional[float] = None

    def update(self, step: int, tokens: int, seconds: float, tokens_per_s: float, loss: float) -> None:
        if self.bar is None:
            return
        fraction = self.config.budget_spent(step, tokens, seconds)
        eta = "?"
        if fraction:
            remaining = seconds * (1 - fraction) / fraction
            eta = f"{int(remaining // 3600)}:{int(remaining % 3600 // 60):02d}:{int(remaining % 60):02d}"
            self.bar.n = int(fraction * BAR_UNITS)
        dev = f" dev_ppl={self.dev_ppl:.1f}" if self.dev_ppl is not None else ""
        self.bar.set_postfix_str(f"step={step} tok/s={tokens_per_s:,.0f} loss={loss:.3f}{dev} eta={eta}", refresh=False)
        self.bar.refresh()

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
