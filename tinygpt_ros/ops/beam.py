"""Beam-search bookkeeping shared by the torch decoder and the onnxruntime engine (no torch).

The backends only rank candidates; which beams survive, when a caption is finished, how it is
length-normalised and which one wins are decided here, so both backends agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

Finished = list[tuple[float, list[int]]]  # (length-normalised score, token ids)


@dataclass
class Beams:
    seqs: list[list[int]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)  # row of the previous step each beam extends
    tokens: list[int] = field(default_factory=list)  # the token each beam appended


def expand_beams(
    ranked: Iterable[tuple[float, int]], seqs: list[list[int]], vocab: int, eos: int,
    width: int, step: int, max_len: int, alpha: float, finished: Finished,
) -> tuple[Beams, bool]:
    """One expansion. `ranked`: (summed log-prob, parent * vocab + token), best first.

    Candidates ending in EOS go to `finished` (score / length**alpha); the best `width` others
    become the next beams. Returns them and whether the search is over (enough finished, no
    beam left, or max length reached, where the open beams count as finished).
    """
    new = Beams()
    for score, flat in ranked:
        if score == float("-inf"):
            break
        parent, tok = divmod(flat, vocab)
        if tok == eos:
            finished.append((score / (step + 1) ** alpha, seqs[parent]))
            continue
        new.seqs.append([*seqs[parent], tok])
        new.scores.append(score)
        new.parents.append(parent)
        new.tokens.append(tok)
        if len(new.seqs) == width:
            break
    last = step + 1 == max_len
    if last:
        finished.extend((s / (step + 1) ** alpha, q)
                        for s, q in zip(new.scores, new.seqs, strict=True))
    return new, len(finished) >= width or not new.seqs or last


def best_finished(finished: Finished) -> list[int]:
    """The highest-scoring finished caption (the first of equal scores); [] if none."""
    if not finished:
        return []
    best = max(range(len(finished)), key=lambda j: finished[j][0])
    return list(finished[best][1])
