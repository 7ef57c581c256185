"""`ops.greedy_decode`: a draft changes how many passes decoding takes, never the caption.

The model here is a deterministic function of the token prefix, so "plain greedy" is exact and
any difference comes from the loop: accepting a token the model would not have produced, or
feeding a row after a rejected one without rewinding the cache."""

from __future__ import annotations

import numpy as np
import pytest

from tinygpt_ros.ops import draft_of, greedy_decode, remember
from tinygpt_ros.ops.drafting import DRAFT_HISTORY

BOS, EOS, VOCAB = 1, 2, 12


def _next(prefix: tuple[int, ...]) -> int:
    """The toy model's argmax after `prefix`: EOS after a prefix-dependent length."""
    if len(prefix) >= 3 + (prefix[-1] % 5) * 2:
        return EOS
    return 3 + (sum(t * (i + 1) for i, t in enumerate(prefix)) * 7) % (VOCAB - 3)


class ToyDecoder:
    def __init__(self) -> None:
        self.cache: list[int] = []  # text inputs fed so far, by position

    def run(self, tokens: list[int], start: int) -> list[int]:
        assert len(self.cache) == start, "a pass must start where the cache ends"
        self.cache.extend(tokens)
        return [_next(tuple(self.cache[:start + i + 1])) for i in range(len(tokens))]

    def rewind(self, n: int) -> None:
        assert n <= len(self.cache)
        del self.cache[n:]


def _decode(draft, max_len: int = 16, older=()):
    toy = ToyDecoder()
    drafts = ([draft] if draft is not None else []) + list(older)
    return greedy_decode(toy.run, toy.rewind, BOS, {EOS}, max_len, drafts)


def test_plain_greedy_is_one_row_and_one_pass_per_token():
    out = _decode(None)
    assert out.ids and EOS not in out.ids
    assert out.rows == out.passes == len(out.ids) + 1  # every token, then the EOS row


@pytest.mark.parametrize("max_len", [4, 16])
def test_any_draft_gives_the_plain_greedy_caption(max_len):
    plain = _decode(None, max_len).ids
    rng = np.random.default_rng(0)
    drafts = [[], plain, draft_of(plain, EOS, max_len), plain[:2], [*plain, 5, 6, 7, EOS]]
    for _ in range(200):
        d = list(draft_of(plain, EOS, max_len))
        for i in rng.choice(len(d), size=int(rng.integers(1, 3)), replace=True):
            d[int(i)] = int(rng.integers(3, VOCAB))  # substitutions
        if rng.random() < 0.3:
            d.insert(int(rng.integers(0, len(d) + 1)), int(rng.integers(3, VOCAB)))
        drafts.append(d)
    drafts.append(list(rng.integers(0, VOCAB, 30)))
    for j, d in enumerate(drafts):
        assert _decode(d, max_len).ids == plain, d
        assert _decode(d, max_len, older=drafts[j + 1:j + 4]).ids == plain, d


def test_the_last_caption_as_draft_costs_one_pass():
    plain = _decode(None)
    again = _decode(draft_of(plain.ids, EOS, 16))
    assert again.ids == plain.ids and again.passes == 1
    assert again.rows == plain.rows  # the same rows, in one pass


def test_a_changed_word_costs_one_more_pass_and_keeps_the_rest_of_the_draft():
    plain = _decode(None)
    assert len(plain.ids) >= 4
    d = draft_of(plain.ids, EOS, 16)
    d[1] = 3 if d[1] != 3 else 4
    out = _decode(d)
    assert out.ids == plain.ids and out.passes == 2


def test_a_caption_cut_at_max_length_drafts_no_eos():
    assert draft_of([5, 6], EOS, 2) == [5, 6]
    assert draft_of([5, 6], EOS, 3) == [5, 6, EOS]


def test_after_a_disagreement_an_older_caption_that_holds_the_token_is_the_draft():
    """A scene flipping back: the newest caption differs from position 2 on, an older one is
    the answer. Checking the newest draft, then the older one from the model's token on,
    takes two passes; without the older caption every token after the change is a pass."""
    plain = _decode(None)
    assert len(plain.ids) >= 6
    exact = draft_of(plain.ids, EOS, 16)
    other = exact[:2] + [t + 1 if t + 1 < VOCAB else 3 for t in exact[2:-1]] + [EOS]
    alone = _decode(other)
    flipped = _decode(other, older=[exact])
    assert alone.ids == flipped.ids == plain.ids
    assert flipped.passes == 2 and alone.passes > 2


def test_recent_drafts_keep_the_newest_distinct_captions_first():
    drafts: list[list[int]] = []
    for d in ([1], [2], [1], [3], [4], [5]):
        remember(drafts, d)
    assert drafts == [[5], [4], [3], [1]] and len(drafts) == DRAFT_HISTORY
