"""The search space: TOML and flags, validation, sampling, enumeration, presets mapped into it."""

from __future__ import annotations

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nas.space import SearchSpace, SpaceError, space_from_options
from search_space import ArchSpec

SMALL = SearchSpace(depths=((1, 2), (1, 1), (1, 3), (1, 1)), widths=((0.25, 0.5), (0.5,), (0.5, 1.0), (1.0, 2.5)),
                    blocks=("repvgg", "qarepvgg"), groups=(1,), resolutions=(32, 48))


def test_example_space_file_parses(repo_root):
    space = SearchSpace.from_toml(repo_root / "examples" / "space.toml")
    assert space.size > 0
    assert all(lo <= hi for lo, hi in space.depths)


def test_toml_overrides_only_given_keys(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('resolutions = [32, 48]\ndepths = [[1, 2], 1, [1, 3], [2, 2]]\n')
    space = SearchSpace.from_toml(f)
    assert space.resolutions == (32, 48)
    assert space.depths == ((1, 2), (1, 1), (1, 3), (2, 2))
    assert space.widths == SearchSpace().widths
    f.write_text('[space]\nblocks = ["qarepvgg"]\n')
    assert SearchSpace.from_toml(f).blocks == ("qarepvgg",)


@pytest.mark.parametrize("text, words", [
    ("resolutions = [32", "not valid TOML"),
    ("colour = 3", "unknown key"),
    ("depths = [[1, 2], [1, 2]]", "4 entries"),
    ("depths = [[3, 1], [1, 2], [1, 2], [1, 2]]", "depth range"),
    ("widths = [[0.3], [0.5], [0.5], [1.0]]\ngroups = [1, 2]", "not divisible"),
    ("blocks = ['resnet']", "unknown block"),
    ("resolutions = [16]", "resolution"),
    ("groups = [1, 1]", "repeats"),
    ("widths = [[], [0.5], [0.5], [1.0]]", "empty"),
    ("resolutions = 32", "must be a list"),
])
def test_broken_space_files_say_what_is_wrong(tmp_path, text, words):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(SpaceError) as info:
        SearchSpace.from_toml(f)
    assert words in str(info.value)


def test_missing_space_file():
    with pytest.raises(SpaceError, match="does not exist"):
        SearchSpace.from_toml("/nonexistent/space.toml")


def test_flags_override_the_file(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("resolutions = [48]\n")
    space = space_from_options(f, depths="1-2,1,1-3,1", widths="0.25/0.5", blocks="repvgg,qarepvgg",
                               groups="1", resolutions="32")
    assert space.depths == ((1, 2), (1, 1), (1, 3), (1, 1))
    assert space.widths == ((0.25, 0.5),) * 4
    assert space.resolutions == (32,)
    with pytest.raises(SpaceError):
        space_from_options(depths="1-2,1-2")
    with pytest.raises(SpaceError):
        space_from_options(widths="a/b")
    with pytest.raises(SpaceError):
        space_from_options(resolutions="32px")


def test_size_matches_enumeration():
    specs = list(SMALL.iter_specs(10))
    assert len(specs) == SMALL.size == 2 * 1 * 2 * 2 * 2 * 2 * 3 * 2
    assert len({s.hash for s in specs}) == len(specs)
    assert all(SMALL.why_outside(s) is None for s in specs)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000))
def test_params_of_round_trips_through_suggest(seed):
    spec = list(SMALL.iter_specs(10))[seed % SMALL.size]
    params = SMALL.params_of(spec)
    assert SMALL.suggest(optuna.trial.FixedTrial(params), 10) == spec
    # Single-choice dimensions are fixed, never parameters.
    assert "w2" not in params and "d2" not in params and "groups" not in params


def test_sampled_specs_stay_in_the_space():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        spec = SMALL.suggest(trial, 7)
        assert SMALL.why_outside(spec) is None and spec.num_classes == 7
        study.tell(trial, 0.0)


def test_presets_map_in_or_say_why_not(repo_root):
    space = SearchSpace.from_toml(repo_root / "examples" / "space.toml")
    a0 = space.preset_spec("a0", 10)
    assert (a0.depths, a0.widths, a0.resolution, a0.num_classes) == ((2, 4, 14, 1), (0.75, 0.75, 0.75, 2.5), 112, 10)
    for name in ("A0", "N0", "N1", "N2", "N3", "N4", "M0", "M1"):  # the example space holds the seed's rows
        assert space.why_outside(space.preset_spec(name, 89)) is None
    with pytest.raises(SpaceError, match="B1 is outside the search space: stage 1 depth 4"):
        space.preset_spec("B1", 10)
    with pytest.raises(SpaceError, match=r"A0 is outside the search space: stage 2 depth 4 is not in 1\.\.2"):
        SearchSpace().preset_spec("A0", 10)  # the default space is sized for the CPU proxy
    with pytest.raises(SpaceError, match="unknown preset"):
        space.preset_spec("Z9", 10)
    with pytest.raises(SpaceError, match="outside"):
        SMALL.params_of(ArchSpec((1, 1, 1, 1), (0.75, 0.5, 0.5, 1.0), resolution=32, num_classes=10))


def test_to_dict_round_trip():
    assert SearchSpace.from_dict(SMALL.to_dict()) == SMALL
    assert "specs" in SMALL.describe()
