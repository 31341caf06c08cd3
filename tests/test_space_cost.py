"""Analytic cost model: the seed's table exactly, the published RepVGG params, and its own invariants."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search_space import (
    FP16,
    INT8,
    SEED_CLASSES,
    SEED_RESOLUTION,
    SEED_ROWS,
    ArchSpec,
    MemoryStrategy,
    analyze,
    get_preset,
    layer_plan,
)
from search_space.cost import layer_costs
from search_space.spec import STAGE_BASE_WIDTHS

# The seed's model-analysis table (checked against its text in the seed notes): deploy params, true MACs,
# peak memory in KiB and the layer where it peaks, and the printed "Flops" column (thop on an unbatched input).
SEED = {
    "A0": (7_142_393, 348_451_072, 2261.25, "stage4.0", "202.337"),
    "N0": (9_784_281, 573_465_088, 1192.5, "stage4.0", "268.466"),
    "N1": (621_369, 36_866_176, 245.4375, "stage0", "67.117"),
    "N2": (2_459_161, 144_732_416, 490.875, "stage0", "134.233"),
    "N3": (877_113, 40_439_296, 328.5, "stage4.0", "67.540"),
    "N4": (2_777_113, 149_473_792, 616.5, "stage4.0", "134.515"),
    "M0": (4_767_961, 206_594_560, 2344.5, "stage4.1", "252.956"),  # the seed prints 252.95M (truncated)
    "M1": (17_739_577, 356_782_336, 14501.25, "stage4.1", "191.220"),
}


def test_seed_rows_are_the_seed_table() -> None:
    assert tuple(SEED) == SEED_ROWS
    assert (SEED_RESOLUTION, SEED_CLASSES) == (112, 89)


@pytest.mark.parametrize("name", SEED_ROWS)
def test_seed_table_exactly(name: str) -> None:
    params, macs, peak_kib, peak_layer, legacy_m = SEED[name]
    report = analyze(get_preset(name).spec(SEED_RESOLUTION, SEED_CLASSES))
    assert report.params == params
    assert report.macs == macs
    assert report.peak_memory_kib == peak_kib  # exact: the byte count is a multiple of 1/1024 KiB
    assert report.peak_layer == peak_layer
    assert f"{report.legacy_flops / 1e6:.3f}" == legacy_m


def test_m0_legacy_flops_truncate_to_the_printed_figure() -> None:
    flops = analyze(get_preset("M0").spec(SEED_RESOLUTION, SEED_CLASSES)).legacy_flops
    assert math.floor(flops / 1e4) / 100 == 252.95


# Published RepVGG parameter counts (Ding et al. 2021, Table 3: inference-time models, 224 px, 1000 classes)
# in millions. They are truncated, not rounded: A0 has 8,309,384 params, published as 8.30M (rounding
# would give 8.31M), so the test truncates to two decimals.
PUBLISHED_PARAMS_M = {
    "A0": 8.30, "A1": 12.78, "A2": 25.49, "B0": 14.33, "B1": 51.82, "B1g2": 41.36, "B1g4": 36.12,
    "B2": 80.31, "B2g4": 55.77, "B3": 110.96,
}


@pytest.mark.parametrize("name", list(PUBLISHED_PARAMS_M))
def test_official_presets_match_published_params(name: str) -> None:
    params = analyze(get_preset(name).spec()).params
    assert math.floor(params / 1e4) / 100 == PUBLISHED_PARAMS_M[name]


def test_a0_rounding_differs_from_truncation() -> None:
    params = analyze(get_preset("A0").spec()).params
    assert params == 8_309_384 and round(params / 1e6, 2) == 8.31


def test_peak_memory_formula_by_hand() -> None:
    report = analyze(get_preset("A0").spec(SEED_RESOLUTION, SEED_CLASSES))
    layer = next(x for x in report.layers if x.name == "stage4.0")
    assert (layer.cin, layer.cout, layer.h_out, layer.stride) == (192, 1280, 4, 2)
    weights = 192 * 1280 * 9
    assert layer.memory_bytes == weights * 1 + 1280 * 1 + 4 * 4 * 1280 * (4 + 1)
    fp16 = next(x for x in analyze(report.spec, FP16).layers if x.name == "stage4.0")
    assert fp16.memory_bytes == weights * 2 + 1280 * 2 + 4 * 4 * 1280 * (2 + 2)


@st.composite
def specs(draw: st.DrawFn) -> ArchSpec:
    """Valid specs of any shape, grouped ones included (channel counts drawn so that groups divide)."""
    groups = draw(st.sampled_from([1, 2, 4]))
    return ArchSpec(
        depths=tuple(draw(st.lists(st.integers(1, 20), min_size=4, max_size=4))),
        widths=tuple(draw(st.integers(1, 48)) * groups / base for base in STAGE_BASE_WIDTHS),
        block=draw(st.sampled_from(["repvgg", "qarepvgg"])),
        groups=groups,
        resolution=draw(st.integers(32, 640)),
        num_classes=draw(st.integers(2, 5000)),
    )


STRATEGIES = [INT8, FP16, MemoryStrategy("int4-weights", 0.5, 4, 4, 1)]


@settings(max_examples=150, deadline=None)
@given(specs(), st.sampled_from(STRATEGIES))
def test_totals_agree_with_the_layer_walk(spec: ArchSpec, strategy: MemoryStrategy) -> None:
    """analyze() uses a closed form per stage; the per-layer table walks every layer. They must agree."""
    report = analyze(spec, strategy)
    layers = report.layers
    assert layers == layer_costs(spec, strategy)
    convs = layers[:-1]
    assert [x.kind for x in layers] == ["conv3x3"] * spec.num_layers + ["linear"]
    assert report.conv_count == len(convs) == spec.num_layers
    assert report.macs == sum(x.macs for x in layers)
    assert report.params == sum(x.params for x in layers)
    assert report.weight_bytes == pytest.approx(sum(x.weight_bytes for x in layers), rel=1e-12)
    assert report.activation_elements == sum(x.h_out * x.w_out * x.cout for x in convs)
    peak = max(layers, key=lambda x: x.memory_bytes)  # max() keeps the first of equal peaks
    assert (report.peak_memory_bytes, report.peak_layer) == (peak.memory_bytes, peak.name)
    assert report.peak_memory_kib == report.peak_memory_bytes / 1024
    for x in convs:
        assert x.macs == x.cin // x.groups * x.cout * 9 * x.h_out * x.w_out
        assert x.params == x.cin // x.groups * x.cout * 9 + x.cout
    head = layers[-1]
    assert (head.cin, head.cout, head.macs, head.params) == (
        spec.stage_widths[3], spec.num_classes, spec.stage_widths[3] * spec.num_classes,
        (spec.stage_widths[3] + 1) * spec.num_classes,
    )
    assert report.train_params > report.params  # every block has at least a 1×1 branch and a BN more
    totals = report.totals()
    assert json.loads(json.dumps(totals)) == totals
    assert json.loads(json.dumps(report.layer_rows())) == [asdict(x) for x in layers]


@settings(max_examples=100, deadline=None)
@given(specs())
def test_layer_plan_is_a_consistent_chain(spec: ArchSpec) -> None:
    plan = layer_plan(spec)
    assert len(plan) == spec.num_layers
    assert (plan[0].name, plan[0].cin, plan[0].cout, plan[0].stride) == ("stage0", 3, spec.stem_width, 2)
    assert plan[0].h_in == spec.resolution
    for prev, cur in itertools.pairwise(plan):
        assert cur.cin == prev.cout and cur.h_in == prev.h_out
    for layer_index, layer in enumerate(plan[1:], 1):
        assert layer.name == f"stage{layer.stage}.{layer.index}"
        assert layer.stride == (2 if layer.index == 0 else 1)
        assert layer.cout == spec.stage_widths[layer.stage - 1]
        assert layer.groups == spec.layer_groups(layer_index)
        assert layer.h_out == math.ceil(layer.h_in / layer.stride)
    assert [sum(1 for x in plan if x.stage == s) for s in range(1, 5)] == list(spec.depths)
    assert plan[-1].h_out == math.ceil(spec.resolution / 32)


@settings(max_examples=60, deadline=None)
@given(specs(), st.integers(0, 3))
def test_deeper_means_more_of_everything_but_peak(spec: ArchSpec, stage: int) -> None:
    # Dense specs only: with groups > 1 one more block shifts which later layers are grouped (the even
    # ones), so a deeper grouped spec can have fewer params.
    spec = spec.replace(groups=1)
    depths = list(spec.depths)
    depths[stage] += 1
    small, big = analyze(spec), analyze(spec.replace(depths=depths))
    assert big.macs > small.macs and big.params > small.params and big.train_params > small.train_params
    assert big.legacy_flops > small.legacy_flops and big.conv_count == small.conv_count + 1
    assert big.peak_memory_bytes >= small.peak_memory_bytes


def test_grouped_convs_cost_less() -> None:
    dense, grouped = analyze(get_preset("B1").spec()), analyze(get_preset("B1g4").spec())
    assert grouped.macs < dense.macs and grouped.params < dense.params
    assert [x.groups for x in grouped.layers[1:8]] == [1, 4, 1, 4, 1, 4, 1]


def test_qarepvgg_has_fewer_train_params_and_the_same_deploy_form() -> None:
    spec = get_preset("A0").spec(SEED_RESOLUTION, SEED_CLASSES)
    rep, qa = analyze(spec), analyze(spec.replace(block="qarepvgg"))
    assert qa.params == rep.params and qa.macs == rep.macs and qa.layers == rep.layers
    # RepVGG has an identity BN (2·C params) in each of the 17 blocks with stride 1; QARepVGG has a 1×1 conv
    # without BN (−2·C) and one BN after the sum (+2·C) instead.
    identity_bn = sum(2 * x.cout for x in rep.layers[:-1] if x.stride == 1)
    assert rep.train_params - qa.train_params == identity_bn


def test_legacy_flops_follow_the_unbatched_thop_rule() -> None:
    """thop on a (3, H, W) input reads H where Cin belongs: per conv Cout·Hout·Wout·(Hin // g)·9."""
    spec = get_preset("N1").spec(SEED_RESOLUTION, SEED_CLASSES)
    convs = layer_plan(spec)
    expected = sum(x.cout * x.h_out**2 * (x.h_in // x.groups) * 9 for x in convs)
    c = spec.stage_widths[3]
    expected += c * spec.num_classes + (convs[-1].h_out + 1) * c
    assert analyze(spec).legacy_flops == expected
    # linear in width at fixed depth (not quadratic as MACs are): N1 ×2 = N2
    n2 = analyze(get_preset("N2").spec(SEED_RESOLUTION, SEED_CLASSES))
    assert abs(n2.legacy_flops / analyze(spec).legacy_flops - 2) < 0.01
    assert abs(n2.macs / analyze(spec).macs - 4) < 0.1
