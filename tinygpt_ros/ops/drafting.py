"""Greedy caption decoding that takes the stream's recent captions as drafts.

Why: on a CPU a pretrained captioner's decoding step is bound by memory, not arithmetic. Each
step reads every decoder and vocabulary-head weight (264 MB for GIT-base) to produce one token,
so a 20-token caption costs 20 sweeps of the weights however little the vision tower had to do.
Consecutive frames of a slowly changing scene mostly get the same caption, so the last caption
is a good guess: fed as a draft, one decoder pass checks all its tokens at once (the rows share
one sweep of the weights), and the caption is kept up to the first token the model disagrees
with. Decoding then goes on from the model's own token: the next draft is what followed the
same two words at the same place in a recent caption (a scene flipping between two states),
else the rest of the last caption as if one word was substituted, else what followed the same
two words, or the same word, anywhere (a word inserted); with none of these, decoding steps
one token a pass until one appears.

The result is plain greedy decoding: a draft token is kept only where the model's own argmax at
that position equals it. The one difference is float rounding between a one-row pass and a
many-row pass, which can decide an exact tie the other way. Arithmetic is not saved: rejected
draft rows are computed in vain, and `Decoded.rows` counts them.

The backend supplies two callbacks over its own key/value cache (image rows already in it):
`run(tokens, start)` feeds text tokens at positions start, start + 1, ... (each attending
causally to the earlier ones), appends their keys and values, and returns each row's argmax;
`rewind(n)` drops every text position from n on.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

DRAFT_HISTORY = 4  # recent distinct captions a stream keeps as drafts


@dataclass(frozen=True)
class Decoded:
    """A caption's ids (without bos/eos) and what producing them cost."""

    ids: list[int]
    rows: int  # text rows the decoder computed: one per step, plus every draft row checked
    passes: int  # sequential decoder passes (a memory-bound CPU pays about one weight sweep each)


def _lookup(drafts: Sequence[Sequence[int]], ids: list[int], bos_id: int,
            substitute: bool) -> tuple[int, int]:
    """(draft, index) of the guess for the token after `ids`, or (-1, -1) for none. Index 0 of
    the newest draft starts decoding. Then, in this order: a draft that holds the last two
    tokens (bos counts as one) at the same positions; with `substitute`, the newest draft at
    the same position (the word the model just changed was a substitution); a draft that holds
    the last two tokens elsewhere; a draft that holds the last token. Ties go to the newest
    draft, then to the position nearest the current one."""
    if not drafts:
        return -1, -1
    pos = len(ids)
    if not ids:
        return 0, 0
    last = ids[-1]
    before = ids[-2] if pos > 1 else bos_id
    best: tuple[tuple[int, int, int], int, int] | None = None
    for n, d in enumerate(drafts):
        for i, t in enumerate(d):
            if t != last:
                continue
            prev = d[i - 1] if i > 0 else bos_id
            kind = (0 if i + 1 == pos else 2) if prev == before else 3
            rank = (kind, n, abs(i + 1 - pos))
            if best is None or rank < best[0]:
                best = (rank, n, i + 1)
    if substitute and pos < len(drafts[0]) and (best is None or best[0][0] > 1):
        return 0, pos
    return (-1, -1) if best is None else best[1:]


def greedy_decode(run: Callable[[list[int], int], Sequence[int]], rewind: Callable[[int], None],
                  bos_id: int, eos_ids: Collection[int], max_len: int,
                  drafts: Sequence[Sequence[int]] = ()) -> Decoded:
    """Greedy decoding of at most `max_len` tokens. `drafts`: recent captions' ids (each with
    its eos when it had one), newest first; each pass also checks the draft tokens that follow
    the last token decoded. No drafts: one token per pass, the textbook loop."""
    ids: list[int] = []
    tok, pos, rows, passes = bos_id, 0, 0, 0
    substitute = False  # the last pass's guess was rejected: try the same position next
    while pos < max_len:  # invariant: len(ids) == pos, `tok` is the input at `pos`
        n, i = _lookup(drafts, ids, bos_id, substitute)
        guess = list(drafts[n][i:i + max_len - 1 - pos]) if n >= 0 else []
        # a guessed eos is checked but not fed: nothing after it would be used
        fed = guess[:-1] if guess and guess[-1] in eos_ids else guess
        pred = run([tok, *fed], pos)
        rows, passes = rows + 1 + len(fed), passes + 1
        kept = 0
        while kept < len(pred) and kept < len(guess) and pred[kept] == guess[kept]:
            kept += 1
        for y in pred[:kept + 1]:  # the agreed draft tokens, then the model's own next one
            if y in eos_ids:
                return Decoded(ids, rows, passes)
            ids.append(int(y))
        # one substitution try per disagreement: not again after a failed one
        substitute = kept < len(guess) and not (substitute and n == 0 and i == pos)
        pos += kept + 1
        if kept < len(fed):
            rewind(pos)  # rows fed after the first disagreement had wrong inputs
        tok = ids[-1]
    return Decoded(ids, rows, passes)


def draft_of(ids: Sequence[int], eos_id: int, max_len: int) -> list[int]:
    """The draft a caption makes for later decodes: its ids, and its eos when decoding
    stopped on one (a caption of `max_len` tokens was cut there and had none)."""
    return [*ids, eos_id] if len(ids) < max_len else list(ids)


def remember(drafts: list[list[int]], draft: list[int]) -> None:
    """Put `draft` first in a stream's recent drafts (moved up if already there), keeping
    `DRAFT_HISTORY`."""
    if draft in drafts:
        drafts.remove(draft)
    drafts.insert(0, draft)
    del drafts[DRAFT_HISTORY:]
