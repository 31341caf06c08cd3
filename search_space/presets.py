"""Named variants: the official RepVGG family, the seed's N0–N4, M0, M1 and its RepOpt-VGG models — one table,
not one function each."""

from __future__ import annotations

from dataclasses import dataclass

from search_space.errors import SpecError
from search_space.spec import ArchSpec, parse_spec

A_DEPTHS = (2, 4, 14, 1)
B_DEPTHS = (4, 6, 16, 1)


@dataclass(frozen=True)
class Preset:
    """One named variant: depths, width multipliers, groups, where it comes from, a note, and its block type."""

    name: str
    depths: tuple[int, int, int, int]
    widths: tuple[float, float, float, float]
    groups: int
    source: str
    note: str = ""
    block: str = "repvgg"

    def spec(self, resolution: int = 224, num_classes: int = 1000, block: str | None = None) -> ArchSpec:
        """The preset as an :class:`ArchSpec` at the given input resolution, class count and block type
        (None: the preset's own)."""
        return ArchSpec(self.depths, self.widths, block or self.block, self.groups, resolution, num_classes)


_OFFICIAL = "RepVGG (Ding et al., CVPR 2021), official table"
_SEED = "challenge seed README, model-analysis table"
_REPOPT = "challenge seed README, results table (RepOpt-VGG, Ding et al., ICLR 2023)"

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("A0", A_DEPTHS, (0.75, 0.75, 0.75, 2.5), 1, _OFFICIAL, "also the seed's A0"),
        Preset("A1", A_DEPTHS, (1, 1, 1, 2.5), 1, _OFFICIAL),
        Preset("A2", A_DEPTHS, (1.5, 1.5, 1.5, 2.75), 1, _OFFICIAL),
        Preset("B0", B_DEPTHS, (1, 1, 1, 2.5), 1, _OFFICIAL),
        Preset("B1", B_DEPTHS, (2, 2, 2, 4), 1, _OFFICIAL),
        Preset("B1g2", B_DEPTHS, (2, 2, 2, 4), 2, _OFFICIAL),
        Preset("B1g4", B_DEPTHS, (2, 2, 2, 4), 4, _OFFICIAL),
        Preset("B2", B_DEPTHS, (2.5, 2.5, 2.5, 5), 1, _OFFICIAL),
        Preset("B2g4", B_DEPTHS, (2.5, 2.5, 2.5, 5), 4, _OFFICIAL),
        Preset("B3", B_DEPTHS, (3, 3, 3, 5), 1, _OFFICIAL),
        Preset("N0", A_DEPTHS, (1, 1, 1, 1), 1, _SEED),
        Preset("N1", A_DEPTHS, (0.25, 0.25, 0.25, 0.25), 1, _SEED),
        Preset("N2", A_DEPTHS, (0.5, 0.5, 0.5, 0.5), 1, _SEED),
        Preset(
            "N3",
            A_DEPTHS,
            (0.25, 0.25, 0.25, 1.0),
            1,
            _SEED,
            "the seed prints stage-4 multiplier 0.1, but its params, memory and FLOPs only match 1.0",
        ),
        Preset("N4", A_DEPTHS, (0.5, 0.5, 0.5, 1.0), 1, _SEED),
        Preset("M0", (2, 2, 2, 2), (1, 1, 1, 1), 1, _SEED),
        Preset("M1", (2, 2, 2, 2), (0.75, 0.75, 0.75, 2.5), 1, _SEED),
        Preset("RepOpt-A0-hs", A_DEPTHS, (0.75, 0.75, 0.75, 2.5), 1, _REPOPT,
               "A0 with the repopt block, scales hyper-searched on the target data (the seed: 89.42 %)", "repopt"),
        Preset("RepOpt-B1", B_DEPTHS, (2, 2, 2, 4), 1, _REPOPT,
               "B1 with the repopt block (the seed: 90.91 % with the official ImageNet scales, not shipped)",
               "repopt"),
    ]
}

#: The eight rows of the seed's model-analysis and hardware tables, at the seed's input and class count.
SEED_ROWS = ("A0", "N0", "N1", "N2", "N3", "N4", "M0", "M1")
SEED_RESOLUTION = 112
SEED_CLASSES = 89


def get_preset(name: str) -> Preset:
    """Look a preset up by name (case-insensitive); unknown names raise :class:`SpecError`."""
    for key, preset in PRESETS.items():
        if key.lower() == name.strip().lower():
            return preset
    raise SpecError(f"unknown preset {name!r}", f"known presets: {', '.join(PRESETS)}")


#: Spec fields an architecture reference can leave open (a preset fixes none of them; a spec string fixes
#: its block and whichever of ``_g``/``_r``/``_c`` it writes).
OPEN_FIELDS = ("block", "groups", "resolution", "num_classes")
_FIELD_LETTER = {"g": "groups", "r": "resolution", "c": "num_classes"}


@dataclass(frozen=True)
class ArchRef:
    """What a user wrote to name an architecture: a preset name or a spec string, parsed once.

    ``spec`` is the reference at the official defaults (224 px, 1000 classes, repvgg, g1 for what the
    text leaves open); ``fixed`` holds the :data:`OPEN_FIELDS` the text states itself. Every caller turns
    a reference into a spec with :meth:`resolve`, so "preset or spec string?" is decided here only.
    """

    text: str
    spec: ArchSpec
    preset: Preset | None
    fixed: frozenset[str]

    @property
    def is_preset(self) -> bool:
        """True when the text named a preset."""
        return self.preset is not None

    def fixes(self, name: str) -> bool:
        """True when the text itself states ``name`` (one of :data:`OPEN_FIELDS`)."""
        return name in self.fixed

    def resolve(
        self,
        resolution: int | None = None,
        num_classes: int | None = None,
        block: str | None = None,
        *,
        default_resolution: int = 224,
        default_classes: int = 1000,
    ) -> ArchSpec:
        """The spec: a value given here wins, else the text's own value, else the default."""
        changes: dict[str, object] = {}
        for name, given, default in (("resolution", resolution, default_resolution),
                                     ("num_classes", num_classes, default_classes), ("block", block, None)):
            if given is not None:
                changes[name] = given
            elif default is not None and not self.fixes(name):
                changes[name] = default
        return self.spec.replace(**changes) if changes else self.spec


def parse_arch(text: str) -> ArchRef:
    """Parse a preset name (``A0``, case-insensitive) or a spec string; invalid text raises :class:`SpecError`."""
    clean = text.strip()
    if "_" not in clean:  # preset names never contain "_"; every spec string does
        preset = get_preset(clean)
        return ArchRef(clean, preset.spec(), preset, frozenset())
    spec = parse_spec(clean)
    letters = {part[:1] for part in clean.split("_")[1:]}
    fixed = {"block"} | {name for letter, name in _FIELD_LETTER.items() if letter in letters}
    return ArchRef(clean, spec, None, frozenset(fixed))


def resolve_arch(
    text: str,
    resolution: int | None = None,
    num_classes: int | None = None,
    block: str | None = None,
) -> ArchSpec:
    """Turn a preset name or a spec string into an :class:`ArchSpec`, overriding fields that are given.

    What the text leaves open resolves at 224 px and 1000 classes (the official setting); see :class:`ArchRef`.
    """
    return parse_arch(text).resolve(resolution, num_classes, block)


def preset_name(spec: ArchSpec) -> str | None:
    """The name of the preset with this spec's depths, widths and groups, if any (one of the spec's block
    type first: a repopt A0 is ``RepOpt-A0-hs``, a qarepvgg A0 is ``A0``)."""
    same = [p for p in PRESETS.values() if (p.depths, p.widths, p.groups) == (spec.depths, spec.widths, spec.groups)]
    own = [p for p in same if p.block == spec.block]
    return (own or same)[0].name if same else None
