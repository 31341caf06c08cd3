"""The search space: which RepVGG variants a search may sample, from flags or a TOML file.

A space is a depth range and a list of width multipliers per stage (1–4), block types, group
patterns and input resolutions. The class count is not part of the space: it comes from the data.
Dimensions with a single choice are fixed, not sampled (they never appear as Optuna parameters).

The default space (1,296 specs at 32 px) is sized for the accuracy proxy on 2 CPU cores: its largest
spec trains in about 10 s, a typical one in 4 s. The seed's models (A0, N0–N4, M0, M1) are deeper and
wider; ``examples/space.toml`` is a space that holds them all.

TOML form (every key optional; missing keys keep the default space's value)::

    resolutions = [32]
    blocks = ["repvgg"]
    groups = [1]
    depths = [[1, 2], [1, 2], [1, 4], 1]            # [min, max] per stage, inclusive; a number fixes it
    widths = [[0.25, 0.5, 0.75], [0.25, 0.5, 0.75], [0.25, 0.5, 0.75], [0.25, 0.5, 1.0]]
"""

from __future__ import annotations

import math
import random
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path
from typing import Any, Protocol

from search_space import BLOCK_TYPES, GROUP_CHOICES, ArchSpec, get_preset
from search_space.errors import NasError, SpecError
from search_space.spec import MAX_DEPTH, STAGE_BASE_WIDTHS


class SpaceError(NasError):
    """A search space (flags or TOML file) is malformed or empty."""


class TrialLike(Protocol):
    """What :meth:`SearchSpace.suggest` needs from an Optuna trial (``Trial`` and ``FixedTrial`` both fit)."""

    def suggest_int(self, name: str, low: int, high: int) -> int: ...
    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


STAGES = 4
KEYS = ("resolutions", "blocks", "groups", "depths", "widths")


@dataclass(frozen=True)
class SearchSpace:
    """Depth range and width choices per stage, block types, group patterns and resolutions."""

    depths: tuple[tuple[int, int], ...] = ((1, 2), (1, 2), (1, 4), (1, 1))
    widths: tuple[tuple[float, ...], ...] = ((0.25, 0.5, 0.75), (0.25, 0.5, 0.75), (0.25, 0.5, 0.75), (0.25, 0.5, 1.0))
    blocks: tuple[str, ...] = ("repvgg",)
    groups: tuple[int, ...] = (1,)
    resolutions: tuple[int, ...] = (32,)

    def __post_init__(self) -> None:
        validate_space(self)

    # -- forms -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON/TOML form (lists)."""
        return {
            "resolutions": list(self.resolutions),
            "blocks": list(self.blocks),
            "groups": list(self.groups),
            "depths": [list(d) for d in self.depths],
            "widths": [list(w) for w in self.widths],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: SearchSpace | None = None, source: str = "space") -> SearchSpace:
        """Build from :meth:`to_dict`-shaped data; keys that are absent keep ``base``'s (default space's) value."""
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            raise SpaceError(f"{source}: unknown key(s) {', '.join(unknown)}", f"allowed keys: {', '.join(KEYS)}")
        base = base or SearchSpace()
        changes: dict[str, Any] = {}
        try:
            if "resolutions" in data:
                changes["resolutions"] = tuple(_ints(data["resolutions"], "resolutions"))
            if "blocks" in data:
                changes["blocks"] = tuple(str(b) for b in _list(data["blocks"], "blocks"))
            if "groups" in data:
                changes["groups"] = tuple(_ints(data["groups"], "groups"))
            if "depths" in data:
                changes["depths"] = tuple(_depth_range(d) for d in _per_stage(data["depths"], "depths"))
            if "widths" in data:
                changes["widths"] = tuple(
                    tuple(_floats(w, "widths")) for w in _per_stage(data["widths"], "widths")
                )
            return replace(base, **changes)
        except SpaceError as exc:
            raise SpaceError(f"{source}: {exc.message}", exc.hint) from None

    @classmethod
    def from_toml(cls, path: str | Path, base: SearchSpace | None = None) -> SearchSpace:
        """Read a space file (see the module docstring for its keys); a ``[space]`` table is also accepted."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SpaceError(f"space file {path} does not exist",
                             "give the path of an existing TOML space file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SpaceError(f"cannot read space file {path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SpaceError(f"space file {path} is not valid TOML: {exc}", "see examples/space.toml") from None
        if set(data) == {"space"} and isinstance(data["space"], dict):
            data = data["space"]
        return cls.from_dict(data, base, source=str(path))

    # -- sampling --------------------------------------------------------------------------------
    def suggest(self, trial: TrialLike, num_classes: int) -> ArchSpec:
        """Sample a spec with ``trial`` (params ``d1..d4``, ``w1..w4``, ``block``, ``groups``, ``resolution``)."""
        depths = tuple(
            lo if lo == hi else trial.suggest_int(f"d{i}", lo, hi) for i, (lo, hi) in enumerate(self.depths, 1)
        )
        widths = tuple(
            ws[0] if len(ws) == 1 else float(trial.suggest_categorical(f"w{i}", list(ws)))
            for i, ws in enumerate(self.widths, 1)
        )
        block = self.blocks[0] if len(self.blocks) == 1 else trial.suggest_categorical("block", list(self.blocks))
        groups = self.groups[0] if len(self.groups) == 1 else trial.suggest_categorical("groups", list(self.groups))
        res = self.resolutions
        resolution = res[0] if len(res) == 1 else trial.suggest_categorical("resolution", list(res))
        return ArchSpec(depths, widths, block, int(groups), int(resolution), num_classes)  # type: ignore[arg-type]

    def sample(self, rng: random.Random, num_classes: int) -> ArchSpec:
        """A uniform random spec drawn with ``rng``: each stage's depth (``randint``), then each stage's width,
        block, groups and resolution (``choice``); a dimension with a single choice consumes no randomness."""
        def draw(choices: Sequence[Any]) -> Any:
            return choices[0] if len(choices) == 1 else rng.choice(choices)

        depths = tuple(lo if lo == hi else rng.randint(lo, hi) for lo, hi in self.depths)
        widths = tuple(draw(ws) for ws in self.widths)
        return ArchSpec(depths, widths, draw(self.blocks), draw(self.groups),  # type: ignore[arg-type]
                        draw(self.resolutions), num_classes)

    def why_outside(self, spec: ArchSpec) -> str | None:
        """``None`` if ``spec`` (ignoring its class count) is in the space, else the first reason it is not."""
        for i, (d, (lo, hi)) in enumerate(zip(spec.depths, self.depths), 1):
            if not lo <= d <= hi:
                return f"stage {i} depth {d} is not in {lo}..{hi}"
        for i, (w, ws) in enumerate(zip(spec.widths, self.widths), 1):
            if not any(math.isclose(w, c) for c in ws):
                return f"stage {i} width {w:g} is not one of {_fmt(ws)}"
        if spec.block not in self.blocks:
            return f"block {spec.block} is not one of {_fmt(self.blocks)}"
        if spec.groups not in self.groups:
            return f"groups {spec.groups} is not one of {_fmt(self.groups)}"
        if spec.resolution not in self.resolutions:
            return f"resolution {spec.resolution} is not one of {_fmt(self.resolutions)}"
        return None

    def params_of(self, spec: ArchSpec) -> dict[str, Any]:
        """The Optuna parameters that make :meth:`suggest` return ``spec`` (for enqueueing)."""
        reason = self.why_outside(spec)
        if reason:
            raise SpaceError(f"{spec.to_string()} is outside the search space: {reason}")
        params: dict[str, Any] = {}
        for i, (d, (lo, hi)) in enumerate(zip(spec.depths, self.depths), 1):
            if lo != hi:
                params[f"d{i}"] = d
        for i, (w, ws) in enumerate(zip(spec.widths, self.widths), 1):
            if len(ws) > 1:
                params[f"w{i}"] = next(c for c in ws if math.isclose(w, c))
        for name, value, choices in (
            ("block", spec.block, self.blocks), ("groups", spec.groups, self.groups),
            ("resolution", spec.resolution, self.resolutions),
        ):
            if len(choices) > 1:
                params[name] = value
        return params

    def preset_spec(self, name: str, num_classes: int) -> ArchSpec:
        """A preset mapped into the space: its depths, widths and groups at the space's first block and resolution.

        Raises :class:`SpaceError` when the preset lies outside the space (the message says where).
        """
        try:
            preset = get_preset(name)
        except SpecError as exc:
            raise SpaceError(exc.message, exc.hint) from None
        spec = preset.spec(self.resolutions[0], num_classes, self.blocks[0])
        reason = self.why_outside(spec)
        if reason:
            raise SpaceError(f"preset {preset.name} is outside the search space: {reason}")
        return spec

    # -- enumeration -----------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of distinct specs in the space."""
        n = len(self.blocks) * len(self.groups) * len(self.resolutions)
        for (lo, hi), ws in zip(self.depths, self.widths):
            n *= (hi - lo + 1) * len(ws)
        return n

    def iter_specs(self, num_classes: int) -> Iterator[ArchSpec]:
        """Every spec of the space, in a fixed order (use only on small spaces: see :attr:`size`)."""
        depth_axes = [range(lo, hi + 1) for lo, hi in self.depths]
        for res, block, groups, *rest in product(self.resolutions, self.blocks, self.groups, *depth_axes,
                                                  *self.widths):
            yield ArchSpec(tuple(rest[:STAGES]), tuple(rest[STAGES:]), block, groups, res, num_classes)  # type: ignore[arg-type]

    def describe(self) -> str:
        """One line for people: ``d1-2/1-4/… w… blocks … groups … r…`` and the size."""
        d = "/".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in self.depths)
        w = "/".join(_fmt(ws, "|") for ws in self.widths)
        return (f"depths {d}, widths {w}, blocks {_fmt(self.blocks)}, groups {_fmt(self.groups)}, "
                f"resolutions {_fmt(self.resolutions)} ({self.size:,} specs)")


def validate_space(space: SearchSpace) -> None:
    """Raise :class:`SpaceError` naming the first problem (wrong stage count, bad range, invalid combination)."""
    if len(space.depths) != STAGES or len(space.widths) != STAGES:
        raise SpaceError(f"depths and widths need {STAGES} entries (stages 1-4)",
                         f"got {len(space.depths)} depth ranges and {len(space.widths)} width lists")
    for i, (lo, hi) in enumerate(space.depths, 1):
        if not 1 <= lo <= hi <= MAX_DEPTH:
            raise SpaceError(f"stage {i} depth range {lo}..{hi} is invalid", f"need 1 <= min <= max <= {MAX_DEPTH}")
    for name, values in (("widths", space.widths), ("blocks", (space.blocks,)), ("groups", (space.groups,)),
                         ("resolutions", (space.resolutions,))):
        for choices in values:
            if not choices:
                raise SpaceError(f"{name} has an empty list of choices", "give at least one value")
            if len(set(choices)) != len(choices):
                raise SpaceError(f"{name} repeats a choice: {_fmt(choices)}", "list each value once")
    for b in space.blocks:
        if b not in BLOCK_TYPES:
            raise SpaceError(f"unknown block type {b!r}", f"allowed: {', '.join(BLOCK_TYPES)}")
    for g in space.groups:
        if g not in GROUP_CHOICES:
            raise SpaceError(f"groups {g} not supported", f"allowed: {_fmt(GROUP_CHOICES)}")
    for i, (ws, base) in enumerate(zip(space.widths, STAGE_BASE_WIDTHS), 1):
        for w in ws:
            if not (math.isfinite(w) and w > 0 and int(base * w) >= 1):
                raise SpaceError(f"stage {i} width {w} gives no channels", f"use at least {1 / base:g}")
            for g in space.groups:
                if int(base * w) % g:
                    raise SpaceError(f"stage {i} width {w:g} gives {int(base * w)} channels, not divisible by "
                                     f"groups={g}", "drop that width or that group choice")
    # The smallest and largest corner must be valid specs (resolution range, …).
    for res in space.resolutions:
        try:
            ArchSpec(tuple(lo for lo, _ in space.depths), tuple(ws[0] for ws in space.widths),  # type: ignore[arg-type]
                     space.blocks[0], space.groups[0], res, 2)
        except SpecError as exc:
            raise SpaceError(exc.message, exc.hint) from None


# -- the text forms of the command line -----------------------------------------------------------
def parse_depths(text: str) -> tuple[tuple[int, int], ...]:
    """``"1-2,1-4,1-8,1"`` → per-stage ``(min, max)``; one range alone applies to every stage."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1:
        parts *= STAGES
    if len(parts) != STAGES:
        raise SpaceError(f"depth ranges: need 1 or {STAGES} (one per stage), got {len(parts)}",
                         'min-max per stage, e.g. "1-2,1-4,1-8,1"')
    out = []
    for p in parts:
        lo, _, hi = p.partition("-")
        try:
            out.append(_depth_range([int(lo), int(hi or lo)]))
        except ValueError:
            raise SpaceError(f"bad depth range {p!r}", 'min-max per stage, e.g. "1-2,1-4,1-8,1"') from None
    return tuple(out)


def parse_widths(text: str) -> tuple[tuple[float, ...], ...]:
    """``"0.25/0.5,0.5/1,0.5/1,1/2.5"`` → per-stage choices; one list alone applies to every stage."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1:
        parts *= STAGES
    if len(parts) != STAGES:
        raise SpaceError(f"width choices: need 1 or {STAGES} lists (one per stage), got {len(parts)}",
                         'multipliers per stage, e.g. "0.25/0.5,0.5/1,0.5/1,1/2.5"')
    try:
        return tuple(tuple(float(x) for x in p.split("/")) for p in parts)
    except ValueError:
        raise SpaceError(f"bad width choices {text!r}", "multipliers separated by / within a stage") from None


def space_from_options(
    path: str | Path | None = None,
    depths: str | None = None,
    widths: str | None = None,
    blocks: str | None = None,
    groups: str | None = None,
    resolutions: str | None = None,
) -> SearchSpace:
    """The space of ``nas search``: the default, overridden by a TOML file, overridden by the text options
    (``depths="1-2,1-4,1-8,1"``, ``widths="0.25/0.5,…"``, comma-separated blocks, groups and resolutions)."""
    space = SearchSpace.from_toml(path) if path else SearchSpace()
    changes: dict[str, Any] = {}
    if depths:
        changes["depths"] = parse_depths(depths)
    if widths:
        changes["widths"] = parse_widths(widths)
    if blocks:
        changes["blocks"] = tuple(b.strip() for b in blocks.split(","))
    try:
        if groups:
            changes["groups"] = tuple(int(g) for g in groups.split(","))
        if resolutions:
            changes["resolutions"] = tuple(int(r) for r in resolutions.split(","))
    except ValueError:
        raise SpaceError("group patterns and resolutions are integers separated by commas",
                         "e.g. 1,2 (groups) or 32,48 (px)") from None
    return replace(space, **changes) if changes else space


# -- helpers ---------------------------------------------------------------------------------------
def _fmt(values: Sequence[Any], sep: str = ",") -> str:
    return sep.join(format(v, "g") if isinstance(v, float) else str(v) for v in values)


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise SpaceError(f"{name} must be a list, got {value!r}")
    return value


def _ints(value: Any, name: str) -> list[int]:
    items = _list(value, name)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise SpaceError(f"{name} must be a list of integers, got {value!r}")
    return items


def _floats(value: Any, name: str) -> list[float]:
    items = _list(value, name)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        raise SpaceError(f"{name} must be lists of numbers, got {value!r}")
    return [float(v) for v in items]


def _per_stage(value: Any, name: str) -> list[Any]:
    items = _list(value, name)
    if len(items) != STAGES:
        raise SpaceError(f"{name} needs {STAGES} entries (stages 1-4), got {len(items)}")
    return items


def _depth_range(value: Any) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    items = _ints(value, "depths")
    if len(items) not in (1, 2):
        raise SpaceError(f"a depth range is [min, max], got {value!r}")
    return (items[0], items[-1])
