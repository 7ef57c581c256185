"""`ops.StepwiseGreedy`: a greedy decode advanced one pass at a time gives the caption of the
one-call greedy loop, however its passes are spread, and runs nothing once complete.

The toy model is a deterministic function of the token prefix (the cache is the prefix), so
any difference comes from the loop: a token fed at the wrong position, a pass repeated or
skipped, bos generated, eos or the length limit ignored."""

from __future__ import annotations

import numpy as np
import pytest

from tinygpt_ros.ops import StepwiseGreedy

BOS, EOS, VOCAB = 1, 2, 12


def _logits(prefix: tuple[int, ...]) -> np.ndarray:
    """The toy model's logits after `prefix` (bos first): bos scores highest everywhere (it
    must never be chosen), then a prefix-dependent token, or eos after a prefix-dependent
    length."""
    row = np.zeros(VOCAB, np.float32)
    row[BOS] = 10.0
    if len(prefix) >= 3 + (prefix[-1] % 5) * 2:
        row[EOS] = 5.0
    else:
        row[3 + (sum(t * (i + 1) for i, t in enumerate(prefix)) * 7) % (VOCAB - 3)] = 5.0
    return row


class Toy:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def prefill(self) -> tuple[np.ndarray, tuple[int, ...]]:
        self.calls.append(("prefill", 0))
        return _logits((BOS,)), (BOS,)

    def step(self, token: int, position: int, cache: tuple[int, ...]
             ) -> tuple[np.ndarray, tuple[int, ...]]:
        assert position == len(cache), "a token goes at the position after the cache"
        self.calls.append(("step", position))
        cache = (*cache, token)
        return _logits(cache), cache


def _reference(max_len: int) -> list[int]:
    """The one-call greedy loop, written out."""
    prefix, out = (BOS,), []
    while len(out) < max_len:
        row = _logits(prefix)
        row[BOS] = -np.inf
        token = int(row.argmax())
        if token == EOS:
            break
        out.append(token)
        prefix = (*prefix, token)
    return out


@pytest.mark.parametrize("max_len", [1, 3, 16])
def test_finish_is_the_greedy_loop_and_counts_one_pass_per_token_plus_eos(max_len):
    toy = Toy()
    d = StepwiseGreedy(toy.prefill, toy.step, BOS, EOS, max_len)
    ids = d.finish()
    assert ids == _reference(max_len) and BOS not in ids
    stopped_on_eos = len(ids) < max_len
    assert d.passes == len(ids) + stopped_on_eos == len(toy.calls)
    assert [c[1] for c in toy.calls] == list(range(d.passes))  # prefill, then positions 1..


def test_passes_spread_over_calls_give_the_same_caption_and_nothing_runs_after_it():
    toy = Toy()
    d = StepwiseGreedy(toy.prefill, toy.step, BOS, EOS, 16)
    assert not d.done and d.ids == []
    assert not d.advance()  # one pass: the first token
    assert d.passes == 1 and len(d.ids) == 1 and toy.calls == [("prefill", 0)]
    while not d.advance():
        pass
    assert d.ids == _reference(16)
    calls = len(toy.calls)
    assert d.advance() and d.finish() == _reference(16) and len(toy.calls) == calls


def test_a_length_limit_under_one_is_refused():
    toy = Toy()
    with pytest.raises(ValueError, match="max_len"):
        StepwiseGreedy(toy.prefill, toy.step, BOS, EOS, 0)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_both_kernels_step_to_the_caption_their_generate_gives(backend):
    """The shipped model: a decode started with `start_decode` and run to the end, or advanced
    one pass at a time, is the kernels' own `generate` on the same fused set; with beam search
    the kernels decode in one call (None)."""
    from pathlib import Path

    from tinygpt_ros.deploy.factory import load_engine

    model = str(Path(__file__).resolve().parent.parent / "models" / "tinygpt")
    engine = load_engine(model, backend=backend)
    kernels = engine.kernels
    rng = np.random.default_rng(3)
    try:
        for n in (6, 12, 31):
            tokens = rng.standard_normal((n, kernels.cfg.dim)).astype(np.float32)
            sizes = rng.integers(1, 9, n).astype(np.float32)
            positions = rng.uniform(size=(n, 3)).astype(np.float32)
            whole = kernels.generate(tokens, sizes, positions)
            d = kernels.start_decode(tokens, sizes, positions)
            while not d.advance():
                pass
            assert d.ids == whole and whole
            assert d.passes == len(whole) + (len(whole) < kernels.cfg.max_caption_len)
        kernels.beam_size = 2
        assert kernels.start_decode(tokens, sizes, positions) is None
    finally:
        engine.close()
