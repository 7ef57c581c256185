"""ANC: complexity features, router, temperature, Gumbel routing, losses and hysteresis."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from tinygpt_ros.model.anc import (
    Router,
    budget_loss,
    expected_flops,
    gumbel_route,
    load_balance_loss,
)
from tinygpt_ros.ops import (
    CHANGE_FLOOR,
    BranchSelector,
    event_complexity_features,
    frame_complexity_features,
    routing_probs,
)
from tinygpt_ros.spec.config import ModelConfig
from tinygpt_ros.spec.flops import branch_dense_flops

CFG = ModelConfig(dim=32, heads=2, branch_depths=(1, 2, 4))


def test_frame_features():
    flat = np.full((56, 56), 0.5, np.float32)
    checker = ((np.indices((56, 56)) // 4).sum(0) % 2).astype(np.float32)
    step = np.zeros((56, 56), np.float32)
    step[:, 28:] = 1.0
    f = frame_complexity_features(torch.zeros(196), 0.5, flat)
    assert f.shape == (4,) and f.dtype == np.float32
    assert f.tolist() == [0.0, 0.0, 0.0, 0.0]
    change = torch.zeros(196)
    change[:49] = 2.0
    f = frame_complexity_features(change, 0.5, checker)
    assert f[0] == pytest.approx(0.25)
    assert f[1] == pytest.approx(math.log1p(0.5))
    assert f[2] == 0.0 and f[3] > 0.3
    assert frame_complexity_features(change, 0.5, step)[3] == pytest.approx(2 / 56)
    # threshold 0 (dense mode): float noise below the floor does not count as change
    noise = torch.full((196,), CHANGE_FLOOR / 10)
    assert frame_complexity_features(noise, 0.0, None)[0] == 0.0
    assert frame_complexity_features(change.numpy(), 0.0, None)[3] == 0.0
    with pytest.raises(ValueError, match="change"):
        frame_complexity_features(torch.zeros(10), 0.5, None)
    with pytest.raises(ValueError, match="NaN or inf"):
        frame_complexity_features(torch.full((196,), float("inf")), 0.5, None)


def test_event_features():
    assert event_complexity_features(np.zeros(196, np.float32), 0, 10_000).tolist() == [0.0] * 4
    counts = np.zeros(196, np.float32)
    counts[[0, 195]] = 10  # two opposite corners
    f = event_complexity_features(counts, 20, 10_000)  # 20 events in 10 ms
    assert f[0] == pytest.approx(2 / 196)
    assert f[1] == pytest.approx(math.log1p(20 / 196))
    assert f[2] == pytest.approx(math.log1p(2.0))
    assert f[3] == pytest.approx(math.sqrt(2 * 6.5**2) / 14, rel=1e-5)
    one = np.zeros(196, np.float32)
    one[100] = 5
    assert event_complexity_features(one, 5, 0)[3] == 0.0  # single patch: no spread
    with pytest.raises(ValueError, match="window_us"):
        event_complexity_features(one, 5, -1)


def test_router_shapes_and_normaliser():
    torch.manual_seed(0)
    router = Router(CFG)
    assert router(torch.zeros(5, 4)).shape == (5, 3)
    assert router(torch.zeros(4)).shape == (3,)
    feats = torch.rand(100, 4) * torch.tensor([1.0, 5.0, 0.0, 0.3]) + 2
    router.fit_normalizer(feats)
    z = (feats - router.feature_mean) / router.feature_std
    assert torch.allclose(z.mean(0), torch.zeros(4), atol=1e-5)
    assert "feature_mean" in router.state_dict()


def test_temperature_flattens_monotonically():
    logits = np.array([2.0, 0.5, -1.0], np.float32)
    entropies = []
    for temp in (0.05, 0.3, 1.0, 3.0, 10.0, 100.0):
        p = routing_probs(logits, temp)
        assert np.isclose(p.sum(), 1.0)
        entropies.append(float(-(p * np.log(np.maximum(p, 1e-30))).sum()))
    assert all(b > a for a, b in itertools.pairwise(entropies))
    assert entropies[-1] == pytest.approx(math.log(3), abs=1e-3)
    with pytest.raises(ValueError, match="temperature"):
        routing_probs(logits, 0.0)


def test_gumbel_hard_is_one_hot_with_gradients():
    logits = torch.tensor([[1.0, 0.0, -1.0]] * 4, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    y = gumbel_route(logits, 0.5, hard=True, generator=g)
    assert y.shape == (4, 3)
    assert torch.equal(y.detach().sum(-1), torch.ones(4))
    assert set(y.detach().unique().tolist()) <= {0.0, 1.0}
    (y * torch.tensor([1.0, 2.0, 4.0])).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    soft = gumbel_route(logits.detach(), 1.0, hard=False, generator=g)
    assert (soft > 0).all() and torch.allclose(soft.sum(-1), torch.ones(4))
    # sampling frequencies follow softmax(logits)
    many = gumbel_route(torch.tensor([[1.0, 0.0, -1.0]]).expand(4000, 3), 1.0,
                        generator=torch.Generator().manual_seed(1))
    freq = many.mean(0)
    assert torch.allclose(freq, torch.softmax(torch.tensor([1.0, 0.0, -1.0]), 0), atol=0.03)


def test_budget_loss_increases_with_expected_flops():
    bf = torch.tensor(branch_dense_flops(CFG))
    assert torch.allclose(expected_flops(torch.eye(3), bf), bf)
    losses = []
    for w in torch.linspace(0, 1, 6):
        probs = torch.tensor([[1 - w, 0.0, w]]).expand(8, 3)  # shift mass to the large branch
        losses.append(float(budget_loss(probs, bf, 0.3)))
    assert losses[0] == 0.0  # small branch only: under budget
    assert all(b >= a for a, b in itertools.pairwise(losses))
    assert losses[-1] > losses[-2] > losses[-3] > 0
    p = torch.tensor([[0.2, 0.3, 0.5]], requires_grad=True)
    budget_loss(p, bf, 0.2).backward()
    assert p.grad[0, 2] > p.grad[0, 0]  # pushes mass off the expensive branch
    with pytest.raises(ValueError, match="budget_fraction"):
        budget_loss(p, bf, 1.5)


def test_load_balance_loss():
    assert float(load_balance_loss(torch.full((6, 3), 1 / 3))) == pytest.approx(0.0, abs=1e-6)
    collapsed = torch.tensor([[1.0, 0.0, 0.0]] * 6)
    assert float(load_balance_loss(collapsed)) == pytest.approx(2.0)
    spread = torch.eye(3).repeat(2, 1)  # each sample one-hot, batch uses all branches
    assert float(load_balance_loss(spread)) == pytest.approx(0.0, abs=1e-6)


def test_hysteresis_stops_flapping():
    a = torch.tensor([0.45, 0.40, 0.15])
    b = torch.tensor([0.40, 0.45, 0.15])
    seq = [a, b] * 5
    plain = BranchSelector(0.0)
    picks = [plain.choose(p) for p in seq]
    assert picks == [0, 1] * 5  # plain argmax flaps every frame
    sticky = BranchSelector(0.2)
    assert [sticky.choose(p) for p in seq] == [0] * 10
    assert sticky.current == 0
    assert sticky.choose(torch.tensor([0.1, 0.1, 0.8])) == 2  # a clear winner still switches
    assert sticky.choose([0.3, 0.3, 0.4]) == 2
    sticky.reset()
    assert sticky.current is None and sticky.choose(b) == 1
    sticky.hysteresis = 0.5
    with pytest.raises(ValueError, match="hysteresis"):
        sticky.hysteresis = 1.5
    assert sticky.hysteresis == 0.5
    with pytest.raises(ValueError, match="hysteresis"):
        BranchSelector(-0.1)
