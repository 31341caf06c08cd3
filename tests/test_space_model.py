"""Model builder and re-parameterization against torch itself: counts, exactness, deploy form, checkpoints.

Counting runs on the ``meta`` device (shapes only, no memory), so every preset is checked at full width;
numeric checks run on real tensors at 32 px.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from search_space import PRESETS, ArchSpec, analyze, get_preset, layer_plan
from search_space.blocks import RepBlock
from search_space.model import RepVGG, build_model, reparameterize
from search_space.spec import STAGE_BASE_WIDTHS

BLOCKS = ["repvgg", "qarepvgg"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def torch_macs(model: nn.Module, resolution: int, device: str = "cpu") -> int:
    """MACs as torch's own FlopCounterMode counts them (2 FLOPs per multiply-accumulate), batch 1."""
    x = torch.zeros(1, 3, resolution, resolution, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


def check_counts(spec: ArchSpec, device: str) -> None:
    """Train params, deploy params and deploy MACs of the built models equal the cost model's."""
    report = analyze(spec)
    with torch.device(device):
        train = build_model(spec)
        deploy = reparameterize(train)
        direct = build_model(spec, deploy=True)
    assert n_params(train) == report.train_params
    assert n_params(deploy) == n_params(direct) == report.params
    assert torch_macs(deploy, spec.resolution, device) == report.macs
    assert torch_macs(direct, spec.resolution, device) == report.macs
    convs = [(name, m) for name, m in deploy.named_modules() if isinstance(m, nn.Conv2d)]
    plan = layer_plan(spec)
    assert [name for name, _ in convs] == [f"{p.name}.reparam" for p in plan]  # names follow the cost model
    for (_, conv), p in zip(convs, plan):
        assert conv.weight.shape == (p.cout, p.cin // p.groups, 3, 3)
        assert (conv.stride, conv.groups) == ((p.stride, p.stride), p.groups)


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("name", list(PRESETS))
def test_counts_match_torch_for_every_preset(name: str, block: str) -> None:
    check_counts(get_preset(name).spec(resolution=32, num_classes=89, block=block), "meta")


def check_deploy_form(model: nn.Module) -> None:
    """Only 3×3 convs with bias, ReLU, the global pool and the linear head; every block fused."""
    allowed_leaves = (nn.Conv2d, nn.ReLU, nn.AdaptiveAvgPool2d, nn.Linear)
    for name, module in model.named_modules():
        if not list(module.children()):
            assert isinstance(module, allowed_leaves), f"{name} is a {type(module).__name__}"
        else:
            assert isinstance(module, (RepVGG, RepBlock, nn.Sequential)), name
        if isinstance(module, nn.Conv2d):
            assert module.kernel_size == (3, 3) and module.padding == (1, 1) and module.bias is not None, name
        if isinstance(module, RepBlock):
            assert module.deploy
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 1
    assert isinstance(model, RepVGG) and model.deploy


def check_exact(spec: ArchSpec, randomize_bn: Callable[[Any, int], Any], seed: int = 0) -> None:
    """Train form (eval mode, random BN statistics) and its re-parameterized form agree; checkpoints load."""
    torch.manual_seed(seed)
    train = randomize_bn(build_model(spec), seed).eval()
    x = torch.randn(2, 3, spec.resolution, spec.resolution)
    before = {k: v.clone() for k, v in train.state_dict().items()}
    with torch.no_grad():
        expected = train(x)
        deploy = reparameterize(train)
        got = deploy(x)
    torch.testing.assert_close(got, expected)  # fp32 defaults: rtol 1.3e-6, atol 1e-5
    check_deploy_form(deploy)
    # the original is untouched: same tensors, still the train form
    assert deploy is not train and not train.deploy
    assert train.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in train.state_dict().items())
    # a deploy model built straight from the spec loads the fused weights strictly and computes the same
    direct = build_model(spec, deploy=True).eval()
    direct.load_state_dict(deploy.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(direct(x), got, rtol=0, atol=0)
    # re-parameterizing again changes nothing
    again = reparameterize(deploy)
    assert again.state_dict().keys() == deploy.state_dict().keys()
    assert all(torch.equal(v, deploy.state_dict()[k]) for k, v in again.state_dict().items())


# Every preset in both block types, except the QARepVGG forms of the widest B models (their block logic is
# covered by A0–B0, B1g4 and the random specs below; building them costs seconds each on two cores).
SLOW_QA = {"B1", "B1g2", "B2", "B2g4", "B3"}
EXACT_CASES = [
    pytest.param(name, block, marks=[pytest.mark.slow] if block == "qarepvgg" and name in SLOW_QA else [])
    for block in BLOCKS
    for name in PRESETS
]


@pytest.mark.parametrize(("name", "block"), EXACT_CASES)
def test_reparameterization_is_exact_for_every_preset(
    name: str, block: str, randomize_bn: Callable[[Any, int], Any]
) -> None:
    check_exact(get_preset(name).spec(resolution=32, num_classes=10, block=block), randomize_bn)


@st.composite
def tiny_specs(draw: st.DrawFn) -> ArchSpec:
    """Small random specs (≤ 12 channels a stage, ≤ 3 blocks, odd sizes too), grouped and QARepVGG included."""
    groups = draw(st.sampled_from([1, 2, 4]))
    return ArchSpec(
        depths=tuple(draw(st.lists(st.integers(1, 3), min_size=4, max_size=4))),
        widths=tuple(draw(st.integers(1, 3)) * groups / base for base in STAGE_BASE_WIDTHS),
        block=draw(st.sampled_from(BLOCKS)),
        groups=groups,
        resolution=draw(st.integers(32, 48)),
        num_classes=draw(st.integers(2, 10)),
    )


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=tiny_specs(), seed=st.integers(0, 2**16))
def test_random_specs_count_and_fuse_exactly(
    spec: ArchSpec, seed: int, randomize_bn: Callable[[Any, int], Any]
) -> None:
    check_counts(spec, "cpu")
    check_exact(spec, randomize_bn, seed)


def test_reparameterize_copies_by_default_and_keeps_the_mode() -> None:
    spec = ArchSpec((1, 2, 1, 1), (0.25, 0.25, 0.25, 0.25), resolution=32, num_classes=5)
    model = build_model(spec).train()
    copy = reparameterize(model)
    assert model.training and not model.deploy
    assert not copy.training and copy.deploy
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    same = reparameterize(model, inplace=True)
    assert same is model and model.deploy and not model.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("block", BLOCKS)
def test_train_form_trains_in_channels_last(block: str) -> None:
    """One SGD step through every branch (strided 1×1 on 3 input channels included) gives finite gradients."""
    torch.manual_seed(0)
    spec = ArchSpec((1, 2, 1, 1), (0.0625, 0.125, 0.0625, 0.03125), block, 2, 33, 4)
    model = build_model(spec).to(memory_format=torch.channels_last).train()
    x = torch.randn(4, 3, 33, 33).to(memory_format=torch.channels_last)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads if g is not None)


def test_nni_counts_the_same_macs_and_params() -> None:
    """A second, independent counter: nni counts a conv as Cin/g·Cout·k²·H·W and a linear as Cin·Cout."""
    pytest.importorskip("nni")
    from nni.compression.utils.counter import count_flops_params

    specs = [
        get_preset("N1").spec(resolution=64, num_classes=89),
        get_preset("M0").spec(resolution=32, num_classes=89),
        ArchSpec((2, 1, 3, 1), (0.125, 0.0625, 0.0625, 0.03125), "qarepvgg", 4, 45, 7),
    ]
    for spec in specs:
        model = reparameterize(build_model(spec))
        x = torch.zeros(1, 3, spec.resolution, spec.resolution)
        macs, params, rows = count_flops_params(model, x, verbose=False)
        report = analyze(spec)
        assert (macs, params) == (report.macs, report.params)
        assert [r["flops"] for r in rows] == [layer.macs for layer in report.layers]
