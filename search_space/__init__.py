"""RepVGG search space: architecture specs, presets, blocks, builder, re-parameterization, analytic costs.

Importing this package does not import torch; the model builder (:mod:`search_space.model`) does.
"""

from search_space.cost import (
    FP16,
    INT8,
    MEMORY_STRATEGIES,
    ConvLayer,
    CostReport,
    LayerCost,
    MemoryStrategy,
    analyze,
    layer_plan,
)
from search_space.errors import NasError, SpecError
from search_space.presets import (
    OPEN_FIELDS,
    PRESETS,
    SEED_CLASSES,
    SEED_RESOLUTION,
    SEED_ROWS,
    ArchRef,
    Preset,
    get_preset,
    parse_arch,
    preset_name,
    resolve_arch,
)
from search_space.spec import BLOCK_TYPES, GROUP_CHOICES, ArchSpec, parse_spec

__all__ = [
    "BLOCK_TYPES",
    "FP16",
    "GROUP_CHOICES",
    "INT8",
    "MEMORY_STRATEGIES",
    "OPEN_FIELDS",
    "PRESETS",
    "SEED_CLASSES",
    "SEED_RESOLUTION",
    "SEED_ROWS",
    "ArchRef",
    "ArchSpec",
    "ConvLayer",
    "CostReport",
    "LayerCost",
    "MemoryStrategy",
    "NasError",
    "Preset",
    "SpecError",
    "analyze",
    "get_preset",
    "layer_plan",
    "parse_arch",
    "parse_spec",
    "preset_name",
    "resolve_arch",
]
