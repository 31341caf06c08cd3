"""The architecture spec: one frozen dataclass that names a RepVGG variant completely.

Canonical string form (file-name safe, round-trips through :func:`ArchSpec.parse`)::

    repvgg_d2-4-14-1_w0.75-0.75-0.75-2.5_g1_r112_c89
    └block └depths    └width multipliers   │  │    └classes
                                           │  └input resolution (square)
                                           └group pattern: g1 none, g2/g4 on every even layer (RepVGG-B style)

Blocks: ``repvgg``, ``qarepvgg`` (multi-branch in training) and ``repopt`` (a plain 3×3 conv-BN block trained
with gradient masks, :mod:`trials.repopt`); all three deploy as the same one-3×3-conv-per-block network.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers
import operator
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

from search_space.errors import SpecError

BLOCK_TYPES = ("repvgg", "qarepvgg", "repopt")
GROUP_CHOICES = (1, 2, 4)
STAGE_BASE_WIDTHS = (64, 128, 256, 512)
STEM_MAX_WIDTH = 64
MAX_DEPTH = 64
MAX_WIDTH_MULTIPLIER = 8.0
MIN_RESOLUTION = 32  # five stride-2 stages: 32 px is the smallest input that keeps a 1×1 map
MAX_RESOLUTION = 4096


def _fmt_width(w: float) -> str:
    """Shortest exact decimal for a width multiplier (0.75 → '0.75', 1.0 → '1')."""
    return format(w, "g") if float(format(w, "g")) == w else repr(w)


@dataclass(frozen=True)
class ArchSpec:
    """A RepVGG variant: depths and width multipliers of stages 1–4, block type, groups, input, classes.

    Stage 0 is one stride-2 block of ``min(64, int(64·w1))`` channels; stage *i* has ``depths[i]``
    blocks of ``int(base_i·w_i)`` channels (bases 64, 128, 256, 512), the first block of each stage
    with stride 2. ``groups`` > 1 makes every even-numbered layer (counting stage 1's first block as
    layer 1) a grouped conv, as RepVGG-B1g2/g4 do.
    """

    depths: tuple[int, int, int, int]
    widths: tuple[float, float, float, float]
    block: str = "repvgg"
    groups: int = 1
    resolution: int = 224
    num_classes: int = 1000

    def __post_init__(self) -> None:
        try:
            depths = tuple(_whole("depth", d) for d in self.depths)
            widths = tuple(float(w) for w in self.widths)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"depths and widths must be sequences of numbers: {exc}") from exc
        object.__setattr__(self, "depths", depths)
        object.__setattr__(self, "widths", widths)
        for name in ("groups", "resolution", "num_classes"):  # 2.0 → 2, so that to_string() parses back
            object.__setattr__(self, name, _whole(name, getattr(self, name)))
        validate(self)

    # -- derived shape ---------------------------------------------------------------------------
    # cached: the cost model reads these once per spec, thousands of specs a second (the cache lives in the
    # instance __dict__, outside the dataclass fields, so equality, hashing and to_dict() ignore it)
    @cached_property
    def stem_width(self) -> int:
        """Output channels of stage 0."""
        return min(STEM_MAX_WIDTH, int(STEM_MAX_WIDTH * self.widths[0]))

    @cached_property
    def stage_widths(self) -> tuple[int, int, int, int]:
        """Output channels of stages 1–4."""
        return tuple(int(b * w) for b, w in zip(STAGE_BASE_WIDTHS, self.widths))  # type: ignore[return-value]

    @property
    def num_layers(self) -> int:
        """Number of 3×3 conv layers of the deploy form (stage 0 included, head excluded)."""
        return 1 + sum(self.depths)

    def layer_groups(self, layer_index: int) -> int:
        """Groups of layer ``layer_index`` (1-based over stages 1–4, as the official code counts)."""
        return self.groups if self.groups > 1 and layer_index % 2 == 0 else 1

    # -- forms -----------------------------------------------------------------------------------
    def to_string(self) -> str:
        """The canonical compact form; ``ArchSpec.parse(s.to_string()) == s``."""
        d = "-".join(str(x) for x in self.depths)
        w = "-".join(_fmt_width(x) for x in self.widths)
        return f"{self.block}_d{d}_w{w}_g{self.groups}_r{self.resolution}_c{self.num_classes}"

    __str__ = to_string

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (lists, not tuples)."""
        d = asdict(self)
        d["depths"] = list(self.depths)
        d["widths"] = list(self.widths)
        return d

    def to_json(self) -> str:
        """JSON form with sorted keys."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        """Build from :meth:`to_dict` output; unknown or missing keys raise :class:`SpecError`."""
        allowed = {"depths", "widths", "block", "groups", "resolution", "num_classes"}
        unknown = set(data) - allowed
        if unknown:
            raise SpecError(f"unknown spec field(s) {sorted(unknown)}", f"allowed: {sorted(allowed)}")
        missing = {"depths", "widths"} - set(data)
        if missing:
            raise SpecError(f"spec is missing {sorted(missing)}", "give depths and widths (4 each)")
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"invalid spec values: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        """Inverse of :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"spec JSON does not parse: {exc}") from exc
        if not isinstance(data, dict):
            raise SpecError("spec JSON must be an object", 'e.g. {"depths": [2,4,14,1], ...}')
        return cls.from_dict(data)

    @classmethod
    def parse(cls, text: str) -> ArchSpec:
        """Parse the canonical string (``g``, ``r``, ``c`` may be omitted: defaults 1, 224, 1000)."""
        return parse_spec(text)

    @property
    def hash(self) -> str:
        """Stable 12-hex-digit hash of the canonical string."""
        return hashlib.sha256(self.to_string().encode()).hexdigest()[:12]

    def replace(self, **changes: Any) -> ArchSpec:
        """A copy with some fields changed (validated)."""
        data = self.to_dict()
        data.update(changes)
        return ArchSpec.from_dict(data)


def _whole(name: str, value: Any) -> int:
    """``value`` as an int if it is a whole number (``2``, ``2.0``, ``numpy.int64(2)``), else :class:`SpecError`."""
    if not isinstance(value, bool):
        with contextlib.suppress(TypeError):
            return operator.index(value)
        if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
            return int(value)
    raise SpecError(f"{name} must be a whole number, got {value!r}")


def validate(spec: ArchSpec) -> None:
    """Raise :class:`SpecError` naming the first invalid field and what is allowed."""
    if len(spec.depths) != 4:
        raise SpecError(f"depths must have 4 values (stages 1-4), got {len(spec.depths)}")
    if len(spec.widths) != 4:
        raise SpecError(f"widths must have 4 values (stages 1-4), got {len(spec.widths)}")
    for i, d in enumerate(spec.depths, 1):
        if not 1 <= d <= MAX_DEPTH:
            raise SpecError(f"depth of stage {i} is {d}", f"allowed: 1..{MAX_DEPTH}")
    for i, (w, base) in enumerate(zip(spec.widths, STAGE_BASE_WIDTHS), 1):
        if not (math.isfinite(w) and 0 < w <= MAX_WIDTH_MULTIPLIER):
            raise SpecError(f"width multiplier of stage {i} is {w}", f"allowed: (0, {MAX_WIDTH_MULTIPLIER}]")
        if int(base * w) < 1:
            raise SpecError(f"width multiplier {w} gives stage {i} no channels", f"use at least {1 / base:g}")
    if spec.block not in BLOCK_TYPES:
        raise SpecError(f"unknown block type {spec.block!r}", f"allowed: {', '.join(BLOCK_TYPES)}")
    if spec.groups not in GROUP_CHOICES:
        raise SpecError(f"groups {spec.groups} not supported", f"allowed: {GROUP_CHOICES}")
    if spec.groups > 1:
        for i, c in enumerate(spec.stage_widths, 1):
            if c % spec.groups:
                raise SpecError(
                    f"stage {i} has {c} channels, not divisible by groups={spec.groups}",
                    "choose widths whose channel counts divide by the group count",
                )
    if not MIN_RESOLUTION <= spec.resolution <= MAX_RESOLUTION:
        raise SpecError(
            f"resolution {spec.resolution} px is out of range",
            f"allowed: {MIN_RESOLUTION}..{MAX_RESOLUTION} (five stride-2 stages)",
        )
    if spec.num_classes < 2:
        raise SpecError(f"num_classes is {spec.num_classes}", "a classifier needs at least 2 classes")


_FORMAT_HINT = "expected e.g. repvgg_d2-4-14-1_w0.75-0.75-0.75-2.5_g1_r112_c89"


def parse_spec(text: str) -> ArchSpec:
    """Parse a canonical spec string; raise :class:`SpecError` with the expected form on failure."""
    parts = text.strip().split("_")
    if len(parts) < 3:
        raise SpecError(f"cannot parse spec {text!r}", _FORMAT_HINT)
    block, fields = parts[0], {}
    for part in parts[1:]:
        key, value = part[:1], part[1:]
        if key not in "dwgrc" or not key or key in fields:
            raise SpecError(f"bad or repeated field {part!r} in spec {text!r}", _FORMAT_HINT)
        fields[key] = value
    if "d" not in fields or "w" not in fields:
        raise SpecError(f"spec {text!r} needs depths (d…) and widths (w…)", _FORMAT_HINT)
    try:
        depths = tuple(int(x) for x in fields["d"].split("-"))
        widths = tuple(float(x) for x in fields["w"].split("-"))
        groups = int(fields.get("g", 1))
        resolution = int(fields.get("r", 224))
        classes = int(fields.get("c", 1000))
    except ValueError as exc:
        raise SpecError(f"non-numeric value in spec {text!r}", _FORMAT_HINT) from exc
    return ArchSpec(depths, widths, block, groups, resolution, classes)  # type: ignore[arg-type]
