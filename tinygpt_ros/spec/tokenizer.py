"""Word-level tokenizer built from the training captions.

Captions of the compact data sets use a small closed vocabulary, so words (not sub-words) keep the
decoder's embedding and LM head tiny. The vocabulary is a pure function of the captions and
`min_count` (specials first, then words by descending count, ties alphabetical), so two builds
from the same data give the same ids. It is stored in the model manifest via `to_dict`.

Importing this module does not import torch (the onnxruntime engine uses it); only
`batch_encode` needs torch and imports it lazily.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
TOKENIZER_KIND = "word"

_APOSTROPHES = re.compile(r"['\u2019`]")
_NON_WORD = re.compile(r"[^\w]|_")  # punctuation and underscores become word breaks


def normalize(text: str) -> str:
    """Lowercase, drop apostrophes ("robot's" -> "robots"), other punctuation -> space."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    text = _APOSTROPHES.sub("", text.lower())
    return " ".join(_NON_WORD.sub(" ", text).split())


class Tokenizer:
    """Word vocabulary with `<pad>`=0, `<bos>`=1, `<eos>`=2, `<unk>`=3."""

    def __init__(self, itos: Sequence[str]) -> None:
        itos = list(itos)
        if tuple(itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"itos must start with the specials {list(SPECIALS)}, got {itos[:4]}")
        if len(set(itos)) != len(itos):
            dup = sorted({w for w in itos if itos.count(w) > 1})
            raise ValueError(f"itos has duplicate words: {dup[:5]}")
        for w in itos[len(SPECIALS) :]:
            if not isinstance(w, str) or not w or normalize(w) != w or " " in w:
                raise ValueError(f"itos word {w!r} is not a normalized single word")
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(itos)}

    # ----------------------------------------------------------------------------- building

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Tokenizer:
        """Vocabulary of the words occurring at least `min_count` times, most frequent first."""
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
        if isinstance(captions, str):
            raise ValueError("captions must be an iterable of str, not a single str")
        counts: Counter[str] = Counter()
        for cap in captions:
            counts.update(normalize(cap).split())
        kept = [w for w, c in counts.items() if c >= min_count]
        words = sorted(kept, key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *words])

    # ----------------------------------------------------------------------------- properties

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def bos_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 2

    @property
    def unk_id(self) -> int:
        return 3

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(range(len(SPECIALS)))

    # ----------------------------------------------------------------------------- coding

    normalize = staticmethod(normalize)

    def encode(self, text: str, add_bos: bool = True, add_eos: bool = True) -> list[int]:
        """Word ids of `text` (unknown words -> `<unk>`), optionally framed by bos/eos."""
        ids = [self.stoi.get(w, self.unk_id) for w in normalize(text).split()]
        if add_bos:
            ids.insert(0, self.bos_id)
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first `<eos>`; specials (pad, bos, unk) are skipped."""
        if hasattr(ids, "tolist"):  # torch / numpy 1-D
            ids = ids.tolist()
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if not 0 <= i < len(self.itos):
                raise ValueError(f"ids contains {i}, outside the vocabulary [0, {len(self.itos)})")
            if i not in self.special_ids:
                words.append(self.itos[i])
        return " ".join(words)

    def batch_encode(
        self, texts: Sequence[str], max_len: int, fixed_length: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Teacher-forcing arrays: `(inputs, targets)`, both int64 (B, L) (numpy, so the
        tokenizer stays torch-free; training wraps them with `torch.from_numpy`).

        Each caption becomes `[bos] + words[:max_len] + [eos]` (long captions are cut but keep
        their eos, so the model learns to stop); `inputs` drops the last id, `targets` the first,
        so `targets[:, t]` is the word to predict after `inputs[:, :t+1]`. Rows are right-padded
        with `pad_id` to L = the longest row (or `max_len + 1` with `fixed_length`); train with
        `F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=tok.pad_id)`.
        """
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"max_len must be an int >= 1, got {max_len!r}")
        if isinstance(texts, str) or len(texts) == 0:
            raise ValueError("texts must be a non-empty sequence of str")
        rows = []
        for t in texts:
            words = self.encode(t, add_bos=False, add_eos=False)[:max_len]
            rows.append([self.bos_id, *words, self.eos_id])
        length = max_len + 1 if fixed_length else max(len(r) for r in rows) - 1
        inputs = np.full((len(rows), length), self.pad_id, dtype=np.int64)
        targets = np.full((len(rows), length), self.pad_id, dtype=np.int64)
        for b, r in enumerate(rows):
            n = len(r) - 1
            inputs[b, :n] = r[:-1]
            targets[b, :n] = r[1:]
        return inputs, targets

    # ----------------------------------------------------------------------------- storage

    def to_dict(self) -> dict[str, Any]:
        return {"kind": TOKENIZER_KIND, "itos": list(self.itos)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tokenizer:
        if not isinstance(d, dict):
            raise ValueError(f"tokenizer must be a dict, got {type(d).__name__}")
        if d.get("kind") != TOKENIZER_KIND:
            raise ValueError(f"tokenizer.kind must be {TOKENIZER_KIND!r}, got {d.get('kind')!r}")
        itos = d.get("itos")
        if not isinstance(itos, list) or not all(isinstance(w, str) for w in itos):
            raise ValueError("tokenizer.itos must be a list of str")
        return cls(itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.itos == other.itos

    def __hash__(self) -> int:
        return hash(tuple(self.itos))

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"
