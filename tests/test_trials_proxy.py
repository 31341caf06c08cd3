"""Proxy accuracy (fixed budget) and zero-cost scores (synflow, NASWOT, grad-norm)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import TensorDataset

from search_space.cost import analyze
from search_space.model import build_model, reparameterize
from search_space.spec import ArchSpec
from trials.data import load_data
from trials.errors import TrainError
from trials.proxy import ProxyConfig, proxy_accuracy, proxy_data
from trials.zero_cost import naswot_kernel, naswot_score, synflow_log, zero_cost_scores

TINY = ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), resolution=32, num_classes=10)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return load_data(None, 32)


def test_proxy_on_the_digits_is_fast_deterministic_and_beats_chance(digits) -> None:
    first = proxy_accuracy(TINY, digits)
    again = proxy_accuracy(TINY.replace(num_classes=1000), digits)  # the class count follows the data
    assert first.balanced_acc >= 0.5 and first.top1 >= 0.5  # chance: 0.1
    assert (first.top1, first.balanced_acc, first.steps) == (again.top1, again.balanced_acc, again.steps)
    cap = ProxyConfig().max_per_class
    assert first.train_images == sum(min(n, cap) for n in digits.train_counts)
    assert first.resolution == 32 and first.epochs == ProxyConfig().epochs
    assert first.steps == first.epochs * (first.train_images // ProxyConfig().batch_size)


def test_max_steps_bounds_the_budget_of_any_spec(digits) -> None:
    big = ArchSpec((2, 4, 14, 1), (0.75, 0.75, 0.75, 2.5), resolution=224, num_classes=1000)  # A0 at 224 px
    torch.set_num_threads(2)
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    result = proxy_accuracy(big, digits, ProxyConfig(max_steps=2, max_per_class=8, val_per_class=2))
    assert torch.get_num_threads() == 2  # the proxy ran on its own 1 thread and restored the caller's
    torch.testing.assert_close(torch.rand(3), expected_draw)  # … and the caller's RNG state
    assert result.steps == 2 and result.resolution == 32 and result.train_images == 80
    assert 0.0 <= result.balanced_acc <= 1.0


def test_larger_images_are_resized_to_the_proxy_resolution() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 3, 48, 48, generator=g), torch.arange(24) % 3
    data = SimpleNamespace(train=TensorDataset(x, y), val=TensorDataset(x[:6], y[:6]), classes=list("abc"),
                           train_counts=[8, 8, 8])
    cfg = ProxyConfig(max_per_class=5, val_per_class=2, max_steps=2, batch_size=8)
    subset = proxy_data(data, cfg)
    assert subset.train.tensors[0].shape == (15, 3, 32, 32) and len(subset.val) == 6
    assert proxy_data(data, cfg) is subset  # cached for the next spec
    assert proxy_accuracy(TINY, data, cfg).train_images == 15


def test_bad_proxy_budgets_are_rejected() -> None:
    for bad in (ProxyConfig(resolution=16), ProxyConfig(max_per_class=0), ProxyConfig(max_steps=0)):
        with pytest.raises(TrainError):
            proxy_accuracy(TINY, None, bad)


def test_zero_cost_scores_are_finite_deterministic_and_beside_params_and_macs(digits) -> None:
    scores = zero_cost_scores(TINY, digits)
    assert scores == zero_cost_scores(TINY, digits)
    assert set(scores) == {"synflow", "log_synflow", "naswot", "grad_norm", "params", "macs"}
    assert all(math.isfinite(v) for v in scores.values())
    report = analyze(TINY)
    assert scores["params"] == report.params and scores["macs"] == report.macs
    assert scores["synflow"] == pytest.approx(math.exp(scores["log_synflow"]))
    assert scores["grad_norm"] > 0


def test_synflow_equals_a_direct_float64_pass_and_grows_with_width() -> None:
    torch.manual_seed(0)
    model = reparameterize(build_model(TINY), inplace=True).double()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
        for m in model.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
    model(torch.ones(1, 3, 32, 32, dtype=torch.float64)).sum().backward()
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    direct = sum(float((m.weight.detach() * m.weight.grad).abs().sum()) for m in layers)
    assert synflow_log(TINY) == pytest.approx(math.log(direct), rel=1e-12)
    assert synflow_log(TINY.replace(widths=(0.5, 0.5, 0.5, 0.5))) > synflow_log(TINY)


def test_naswot_kernel_is_units_minus_hamming_distance() -> None:
    g = torch.Generator().manual_seed(1)
    codes = torch.rand(5, 40, generator=g) > 0.5
    kernel = naswot_kernel(codes)
    for i in range(5):
        for j in range(5):
            assert kernel[i, j] == 40 - int((codes[i] != codes[j]).sum())


def test_naswot_is_minus_infinity_for_duplicate_images() -> None:
    torch.manual_seed(0)
    model = build_model(TINY).train()
    x = torch.randn(4, 3, 32, 32)
    assert math.isfinite(naswot_score(model, x))
    assert naswot_score(model, torch.cat([x, x[:1]])) == -math.inf
