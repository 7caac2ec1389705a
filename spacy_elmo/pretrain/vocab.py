"""The softmax vocabulary: ``<S>``, ``</S>``, ``<UNK>``, then words by descending frequency.

Only the language-model targets use word ids (the biLM reads characters), and the
sampled softmax's log-uniform sampler relies on the frequency order, as in bilm-tf.
"""

import itertools
from collections import Counter
from pathlib import Path
from typing import Iterable, List, Sequence

from ..chars import BOS_TOKEN, EOS_TOKEN
from ..files import PathLike, write_text_atomic
from .errors import PretrainDataError

BOS, EOS, UNK = BOS_TOKEN, EOS_TOKEN, "<UNK>"
SPECIALS = (BOS, EOS, UNK)


class LmVocab:
    """Word ↔ id map; unknown words map to ``<UNK>`` (id 2)."""

    bos_id, eos_id, unk_id = 0, 1, 2

    def __init__(self, words: Sequence[str], source: str = "<vocab>") -> None:
        if tuple(words[:3]) != SPECIALS:
            raise PretrainDataError(
                f"Vocabulary {source} must start with {', '.join(SPECIALS)} (one per line), got "
                f"{list(words[:3])!r}. Add them as the first three lines."
            )
        self.words = list(words)
        self.index = {word: i for i, word in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise PretrainDataError(f"Vocabulary {source} lists a word twice; every line must be unique.")

    def __len__(self) -> int:
        return len(self.words)

    def ids(self, tokens: Iterable[str]) -> List[int]:
        """Word ids of ``tokens``, ``<UNK>`` for words outside the vocabulary."""
        get, unk = self.index.get, self.unk_id
        return [get(token, unk) for token in tokens]

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], size: int, min_count: int, max_tokens: int) -> "LmVocab":
        """Count words over the first ``max_tokens`` tokens of ``sentences``; keep the ``size - 3`` most frequent."""
        counts: Counter = Counter()
        seen = 0
        for sentence in sentences:
            counts.update(sentence)
            seen += len(sentence)
            if seen >= max_tokens:
                break
        for special in SPECIALS:
            counts.pop(special, None)
        ranked = sorted((item for item in counts.items() if item[1] >= min_count), key=lambda item: (-item[1], item[0]))
        words = [word for word, _ in itertools.islice(ranked, max(0, size - len(SPECIALS)))]
        return cls([*SPECIALS, *words], source="<built>")

    @classmethod
    def load(cls, path: PathLike) -> "LmVocab":
        """Read a vocabulary file: one word per line (bilm-tf's format)."""
        path = Path(path)
        if not path.is_file():
            raise PretrainDataError(f"Vocabulary file not found: {path}. Fix [vocab] path, or set it to null to count one.")
        try:
            words = path.read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as err:
            raise PretrainDataError(f"Vocabulary file {path} is not readable UTF-8 text: {err}.") from None
        return cls([w.split()[0] if w.split() else w for w in words if w.strip()], source=str(path))

    def save(self, path: PathLike) -> None:
        """Write one word per line, atomically."""
        write_text_atomic(path, "\n".join(self.words) + "\n")
