"""ArchSpec: string/JSON/dict round trips, a stable hash, every validation branch, presets and resolve_arch."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search_space import (
    PRESETS,
    ArchSpec,
    NasError,
    SpecError,
    get_preset,
    parse_spec,
    preset_name,
    resolve_arch,
)
from search_space.spec import MAX_DEPTH, MAX_RESOLUTION, MAX_WIDTH_MULTIPLIER, MIN_RESOLUTION, STAGE_BASE_WIDTHS

A0_SEED = "repvgg_d2-4-14-1_w0.75-0.75-0.75-2.5_g1_r112_c89"


@st.composite
def valid_specs(draw: st.DrawFn) -> ArchSpec:
    """Any valid spec: channel counts drawn per stage (so that grouped specs divide), or arbitrary floats."""
    groups = draw(st.sampled_from([1, 2, 4]))
    if draw(st.booleans()):  # exact multipliers: channels / base
        widths = [draw(st.integers(1, 64)) * groups / base for base in STAGE_BASE_WIDTHS]
    else:  # arbitrary floats (groups 1 only: their channel counts need not divide)
        groups = 1
        widths = [draw(st.floats(1 / base, MAX_WIDTH_MULTIPLIER)) for base in STAGE_BASE_WIDTHS]
    return ArchSpec(
        depths=tuple(draw(st.lists(st.integers(1, MAX_DEPTH), min_size=4, max_size=4))),
        widths=tuple(widths),
        block=draw(st.sampled_from(["repvgg", "qarepvgg"])),
        groups=groups,
        resolution=draw(st.integers(MIN_RESOLUTION, MAX_RESOLUTION)),
        num_classes=draw(st.integers(2, 100_000)),
    )


@settings(max_examples=200, deadline=None)
@given(valid_specs())
def test_every_form_round_trips(spec: ArchSpec) -> None:
    text = spec.to_string()
    assert ArchSpec.parse(text) == spec
    assert parse_spec(text).to_string() == text
    assert str(spec) == text
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert ArchSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert ArchSpec.parse(text).hash == spec.hash
    assert len(spec.hash) == 12 and int(spec.hash, 16) >= 0
    assert "/" not in text and " " not in text  # file-name safe


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_and_are_named(name: str) -> None:
    spec = get_preset(name).spec(resolution=112, num_classes=89)
    assert ArchSpec.parse(spec.to_string()) == spec
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert preset_name(spec) == name


def test_canonical_string_and_literal_hash() -> None:
    spec = get_preset("A0").spec(resolution=112, num_classes=89)
    assert spec.to_string() == A0_SEED
    # sha256 of the canonical string, first 12 hex digits: must never change (run folders are named by it)
    assert spec.hash == "9d5913d42c1b"
    assert json.loads(spec.to_json()) == {
        "block": "repvgg", "depths": [2, 4, 14, 1], "groups": 1, "num_classes": 89, "resolution": 112,
        "widths": [0.75, 0.75, 0.75, 2.5],
    }


def test_parse_defaults_and_field_order() -> None:
    spec = ArchSpec.parse("qarepvgg_d1-2-3-4_w0.5-0.5-1-1")
    assert (spec.block, spec.groups, spec.resolution, spec.num_classes) == ("qarepvgg", 1, 224, 1000)
    shuffled = ArchSpec.parse(" repvgg_c89_r112_g1_w0.750-0.75-0.75-2.50_d2-4-14-1 ")
    assert shuffled.to_string() == A0_SEED


def test_widths_print_shortest_exact_decimal() -> None:
    spec = ArchSpec((1, 1, 1, 1), (0.1 + 0.2, 1.0, 2.0, 1 / 3))
    assert spec.to_string().split("_")[2] == "w0.30000000000000004-1-2-0.3333333333333333"
    assert ArchSpec.parse(spec.to_string()).widths == spec.widths


def test_whole_numbers_are_normalized() -> None:
    spec = ArchSpec([2.0, 4, 14, 1], [1, 1, 1, 1], groups=2.0, resolution=112.0, num_classes=89.0)  # type: ignore[arg-type]
    assert spec.to_string() == "repvgg_d2-4-14-1_w1-1-1-1_g2_r112_c89"
    assert all(type(v) is int for v in (*spec.depths, spec.groups, spec.resolution, spec.num_classes))


def test_spec_is_frozen_and_replace_validates() -> None:
    spec = ArchSpec.parse(A0_SEED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.resolution = 64  # type: ignore[misc]
    assert spec.replace(resolution=64).resolution == 64
    assert spec.replace(resolution=64).depths == spec.depths
    with pytest.raises(SpecError):
        spec.replace(groups=3)
    with pytest.raises(SpecError, match="unknown spec field"):
        spec.replace(colour="red")


def _kw(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {"depths": (1, 1, 1, 1), "widths": (1, 1, 1, 1)}
    base.update(changes)
    return base


INVALID = {
    "three depths": _kw(depths=(1, 1, 1)),
    "five widths": _kw(widths=(1, 1, 1, 1, 1)),
    "depth 0": _kw(depths=(0, 1, 1, 1)),
    "depth too large": _kw(depths=(1, 1, MAX_DEPTH + 1, 1)),
    "fractional depth": _kw(depths=(1, 2.5, 1, 1)),
    "depths not a sequence": _kw(depths=4),
    "width 0": _kw(widths=(0, 1, 1, 1)),
    "negative width": _kw(widths=(1, -1, 1, 1)),
    "width nan": _kw(widths=(1, 1, math.nan, 1)),
    "width inf": _kw(widths=(1, 1, 1, math.inf)),
    "width too large": _kw(widths=(1, 1, 1, MAX_WIDTH_MULTIPLIER * 1.01)),
    "width gives no channels": _kw(widths=(0.015, 1, 1, 1)),  # 64 · 0.015 < 1
    "width not a number": _kw(widths=("wide", 1, 1, 1)),
    "unknown block": _kw(block="resnet"),
    "groups 3": _kw(groups=3),
    "groups bool": _kw(groups=True),
    "groups not dividing": _kw(widths=(1, 1, 1, 3 / 512), groups=2),  # stage 4 has 3 channels
    "resolution too small": _kw(resolution=MIN_RESOLUTION - 1),
    "resolution too large": _kw(resolution=MAX_RESOLUTION + 1),
    "resolution as text": _kw(resolution="112"),
    "one class": _kw(num_classes=1),
}


@pytest.mark.parametrize("kwargs", INVALID.values(), ids=INVALID.keys())
def test_invalid_specs_raise_spec_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(SpecError) as info:
        ArchSpec(**kwargs)  # type: ignore[arg-type]
    assert info.value.message
    with pytest.raises(SpecError):
        ArchSpec.from_dict({k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()})


def test_smallest_widths_are_valid() -> None:
    spec = ArchSpec((1, 1, 1, 1), tuple(1 / b for b in STAGE_BASE_WIDTHS))
    assert spec.stem_width == 1 and spec.stage_widths == (1, 1, 1, 1)


BAD_STRINGS = [
    "",
    "repvgg",
    "repvgg_d1-1-1-1",  # no widths
    "repvgg_w1-1-1-1_g1",  # no depths
    "repvgg_d1-1-1-1_w1-1-1-1_",  # empty field
    "repvgg_d1-1-1-1_d1-1-1-1_w1-1-1-1",  # repeated field
    "repvgg_d1-1-1-1_w1-1-1-1_x3",  # unknown field
    "repvgg_da-1-1-1_w1-1-1-1",  # non-numeric
    "repvgg_d1-1-1-1_w1-1-1-1_g",  # empty value
    "repvgg_d1--1-1-1_w1-1-1-1",  # negative / empty depth
    "repvgg_d1-1-1_w1-1-1-1",  # three depths
    "repvgg_d1-1-1-1_w1-1-1-1_r16",  # resolution too small
    "resnet_d1-1-1-1_w1-1-1-1",  # unknown block
    "repvgg_d1-1-1-1_w1-1-1-nan",  # not finite
]


@pytest.mark.parametrize("text", BAD_STRINGS)
def test_bad_strings_raise_spec_error_with_hint(text: str) -> None:
    with pytest.raises(SpecError) as info:
        ArchSpec.parse(text)
    assert str(info.value)


@pytest.mark.parametrize(
    "text", ["not json", "[1, 2]", '{"depths": [1, 1, 1, 1]}', '{"depths": [1,1,1,1], "widths": [1,1,1,1], "x": 1}']
)
def test_bad_json_raises_spec_error(text: str) -> None:
    with pytest.raises(SpecError):
        ArchSpec.from_json(text)


def test_spec_error_is_a_nas_error_with_hint() -> None:
    with pytest.raises(SpecError) as info:
        ArchSpec.parse("repvgg_d1-1-1-1_w1-1-1-1_g3")
    err = info.value
    assert isinstance(err, NasError) and isinstance(err, ValueError)
    assert err.hint and err.hint in str(err) and err.message in str(err)


def test_get_preset_is_case_insensitive_and_lists_known_names() -> None:
    assert get_preset(" a0 ") is PRESETS["A0"]
    assert get_preset("b1G4") is PRESETS["B1g4"]
    with pytest.raises(SpecError) as info:
        get_preset("Z9")
    assert info.value.hint is not None and "A0" in info.value.hint and "M1" in info.value.hint


def test_resolve_arch_presets_strings_and_overrides() -> None:
    a0 = resolve_arch("A0")
    assert (a0.resolution, a0.num_classes, a0.block) == (224, 1000, "repvgg")
    seed = resolve_arch("A0", resolution=112, num_classes=89)
    assert seed.to_string() == A0_SEED
    assert resolve_arch(A0_SEED) == seed
    qa = resolve_arch(A0_SEED, block="qarepvgg", resolution=64)
    assert (qa.block, qa.resolution, qa.num_classes, qa.depths) == ("qarepvgg", 64, 89, seed.depths)
    with pytest.raises(SpecError):
        resolve_arch("A0", resolution=8)
    with pytest.raises(SpecError):
        resolve_arch("repvgg_d1-1-1-1_w1-1-1-1", block="mobilenet")


def test_preset_table_facts() -> None:
    n3 = PRESETS["N3"]
    assert n3.widths == (0.25, 0.25, 0.25, 1.0) and "0.1" in n3.note
    assert PRESETS["B1g2"].groups == 2 and PRESETS["B2g4"].groups == 4
    assert preset_name(ArchSpec((1, 1, 1, 1), (1, 1, 1, 1))) is None
    for preset in PRESETS.values():  # every preset builds at the official and the seed setting
        assert preset.spec().num_layers == 1 + sum(preset.depths)
        assert preset.spec(112, 89, "qarepvgg").block == "qarepvgg"


def test_grouped_layers_are_the_even_ones() -> None:
    spec = get_preset("B1g4").spec()
    assert [spec.layer_groups(i) for i in range(1, 7)] == [1, 4, 1, 4, 1, 4]
    assert all(ArchSpec((1, 1, 1, 1), (1, 1, 1, 1)).layer_groups(i) == 1 for i in range(1, 5))
