"""Architecture tables for people: the seed's model-analysis table and per-spec cost rows."""

from __future__ import annotations

from collections.abc import Sequence

from search_space import (
    MEMORY_STRATEGIES,
    PRESETS,
    SEED_CLASSES,
    SEED_RESOLUTION,
    SEED_ROWS,
    ArchSpec,
    MemoryStrategy,
    analyze,
    parse_arch,
)
from search_space.errors import SpecError


def memory_strategy(name: str) -> MemoryStrategy:
    """The memory strategy called ``name`` (``int8`` or ``fp16``)."""
    if name not in MEMORY_STRATEGIES:
        raise SpecError(f"unknown memory strategy {name!r}", f"allowed: {', '.join(MEMORY_STRATEGIES)}")
    return MEMORY_STRATEGIES[name]


def arch_row(name: str, spec: ArchSpec, memory: str = "int8") -> dict[str, object]:
    """One row of the model-analysis table: shape, true MACs, legacy FLOPs, params, peak memory."""
    report = analyze(spec, memory_strategy(memory))
    return {
        "name": name,
        "depths": list(spec.depths),
        "widths": list(spec.widths),
        "block": spec.block,
        "groups": spec.groups,
        "resolution": spec.resolution,
        "num_classes": spec.num_classes,
        "macs": report.macs,
        "legacy_flops": report.legacy_flops,
        "params": report.params,
        "train_params": report.train_params,
        "peak_memory_kib": report.peak_memory_kib,
        "peak_layer": report.peak_layer,
        "spec": spec.to_string(),
    }


def arch_table(
    names: Sequence[str] = SEED_ROWS,
    resolution: int | None = SEED_RESOLUTION,
    num_classes: int | None = SEED_CLASSES,
    memory: str = "int8",
) -> list[dict[str, object]]:
    """The seed's model-analysis table (by default its eight rows at 112 px, 89 classes), from the cost model.

    ``resolution``/``num_classes`` override every row; ``None`` keeps what a spec string states and puts
    what the text leaves open (every field of a preset) at the seed's 112 px / 89 classes.
    """
    return [arch_row(name, parse_arch(name).resolve(resolution, num_classes, default_resolution=SEED_RESOLUTION,
                                                    default_classes=SEED_CLASSES), memory)
            for name in names]


def preset_rows() -> list[dict[str, object]]:
    """Every preset with its source and note."""
    return [
        {"name": p.name, "depths": list(p.depths), "widths": list(p.widths), "groups": p.groups,
         "source": p.source, "note": p.note}
        for p in PRESETS.values()
    ]
