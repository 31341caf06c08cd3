"""RepOpt-VGG (Ding et al., ICLR 2023): a plain VGG trained like a multi-branch one, through its optimizer.

Two stages, both on the user's data with the same recipe:

1. **Hyper-search (HS)**: a model whose every block is ``relu(bn(s₃·conv3×3(x) + s₁·conv1×1(x) + s_id·x))``
   (identity only where shapes allow) with trainable per-output-channel scales (:class:`HyperSearchBlock`,
   :func:`build_hs_model`), trained briefly (:func:`hs_config`); only the scales are kept (:class:`Scales`,
   a plain JSON file that names the spec it belongs to).
2. **Target**: the plain ``repopt`` model (one 3×3 conv-BN-ReLU per block), initialized from the scales as
   ``s₃·W₃ + pad(s₁·W₁) + s_id·I`` (:func:`init_from_scales`) and trained with an optimizer that multiplies
   each block kernel's gradient by a constant mask (:func:`grad_masks`): s₃² everywhere, + s₁² at the kernel
   centre, + 1 on the identity's diagonal centre (squared for SGD, first power for AdamW, as the official
   code does). Weight decay and momentum then act on the masked gradient (:class:`RepOptSGD`).

For SGD this is exact: k steps of the masked plain conv equal k steps of the block
``s₃·conv3×3 + s₁·conv1×1 + diag(d)`` with the scales frozen and a trainable per-channel identity ``d``
(initialized to s_id), merged into one kernel — tests/test_repopt.py checks it in float64. docs/repopt.md
gives the budgets and the derivation.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from search_space.blocks import RepBlock, fuse_conv_bn, identity_kernel
from search_space.cost import layer_plan
from search_space.io import atomic_write
from search_space.model import RepVGG, build_model
from search_space.spec import ArchSpec
from trials.config import SEARCH_SCALES, TrainConfig
from trials.errors import TrainError

FORMAT = "repvgg-hwnas-repopt-scales"
VERSION = 1
#: Share of the target run's epochs, step cap and warm-up that the hyper-search stage gets by default.
HS_SHARE = 0.2


# -- the hyper-search model ---------------------------------------------------------------------------

class HyperSearchBlock(RepBlock):
    """``relu(bn(s₃·conv3×3(x) + s₁·conv1×1(x) [+ s_id·x]))`` with per-output-channel scales (trainable)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 1, scale_init: float = 1.0) -> None:
        super().__init__(cin, cout, stride, groups, deploy=False)
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False)
        self.one_by_one = nn.Conv2d(cin, cout, 1, 1, 0, groups=groups, bias=False)
        self.scale_conv = nn.Parameter(torch.full((cout,), float(scale_init)))
        self.scale_one_by_one = nn.Parameter(torch.full((cout,), float(scale_init)))
        self.scale_identity = nn.Parameter(torch.ones(cout)) if self.has_identity else None
        self.bn = nn.BatchNorm2d(cout)

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        out = (self.conv(x) * self.scale_conv.view(1, -1, 1, 1)
               + self.one_by_one(self._subsample(x)) * self.scale_one_by_one.view(1, -1, 1, 1))
        if self.scale_identity is not None:
            out = out + x * self.scale_identity.view(1, -1, 1, 1)
        return self.bn(out)

    def merged_kernel(self) -> torch.Tensor:
        """The one 3×3 kernel equal to the scaled branches before the BN."""
        weight = (self.conv.weight * self.scale_conv.view(-1, 1, 1, 1)
                  + F.pad(self.one_by_one.weight * self.scale_one_by_one.view(-1, 1, 1, 1), [1, 1, 1, 1]))
        if self.scale_identity is not None:
            weight = weight + identity_kernel(self.cin, self.groups, weight) * self.scale_identity.view(-1, 1, 1, 1)
        return weight

    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        return fuse_conv_bn(self.merged_kernel(), self.bn)


def scale_init(index: int) -> float:
    """Initial s₃ and s₁ of block ``index`` of a stage, as the official code sets them: 1, then √(2/index)."""
    return 1.0 if index == 0 else math.sqrt(2.0 / index)


def blocks_of(model: nn.Module) -> list[tuple[str, RepBlock]]:
    """The blocks of a RepVGG-layout model in order, named as the cost model names layers (``stage3.5``)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, RepBlock)]


def build_hs_model(spec: ArchSpec) -> RepVGG:
    """The hyper-search model of ``spec``: its layout, every block a :class:`HyperSearchBlock`."""
    model = build_model(spec.replace(block="repopt"))
    for layer in layer_plan(spec):
        block = HyperSearchBlock(layer.cin, layer.cout, layer.stride, layer.groups, scale_init(layer.index))
        if layer.name == "stage0":
            model.stage0 = block
        else:
            stage, index = layer.name.split(".")
            getattr(model, stage)[int(index)] = block
    return model


# -- scales -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlockScales:
    """One block's per-output-channel scales: 3×3 conv, 1×1 conv, identity (None where there is none)."""

    name: str
    conv: tuple[float, ...]
    one_by_one: tuple[float, ...]
    identity: tuple[float, ...] | None = None

    def tensors(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(s₃, s₁, s_id) as column tensors (C, 1, 1, 1) with ``like``'s dtype and device."""
        def col(values: Iterable[float]) -> torch.Tensor:
            return torch.tensor(list(values), dtype=like.dtype, device=like.device).view(-1, 1, 1, 1)
        return col(self.conv), col(self.one_by_one), None if self.identity is None else col(self.identity)


def _shape(spec: ArchSpec) -> tuple[object, ...]:
    """What scales depend on: depths, widths, groups (not the block, the input size or the head)."""
    return spec.depths, spec.widths, spec.groups


@dataclass(frozen=True)
class Scales:
    """The scales of every block of one spec, how they were found (``found_by``) and the file they were read
    from (``source``, None when found in this process). Equality and :attr:`sha256` cover the values and the
    spec only."""

    spec: ArchSpec
    blocks: tuple[BlockScales, ...]
    found_by: Mapping[str, Any] = field(default_factory=dict, compare=False)
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        plan = layer_plan(self.spec)
        names = [b.name for b in self.blocks]
        if names != [p.name for p in plan]:
            raise TrainError(f"the scales name blocks {names[:3]}… but {self.spec} has {[p.name for p in plan][:3]}…",
                             "use scales found for this architecture")
        for b, p in zip(self.blocks, plan):
            has_identity = p.cin == p.cout and p.stride == 1
            lengths = {len(b.conv), len(b.one_by_one), *([len(b.identity)] if b.identity is not None else [])}
            if lengths != {p.cout} or (b.identity is not None) != has_identity:
                raise TrainError(f"the scales of block {b.name} do not fit its {p.cout} channels"
                                 f"{' and identity branch' if has_identity else ''}", "the scales file is damaged")
            values = [*b.conv, *b.one_by_one, *(b.identity or ())]
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                raise TrainError(f"the scales of block {b.name} hold a non-finite or non-numeric value",
                                 "the scales file is damaged; find the scales again")

    @classmethod
    def from_model(cls, model: nn.Module, spec: ArchSpec, found_by: Mapping[str, Any]) -> Scales:
        """The scales a trained hyper-search model holds."""
        def values(p: torch.Tensor | None) -> tuple[float, ...] | None:
            return None if p is None else tuple(p.detach().double().cpu().tolist())
        blocks = tuple(BlockScales(name, values(b.scale_conv), values(b.scale_one_by_one), values(b.scale_identity))
                       for name, b in blocks_of(model) if isinstance(b, HyperSearchBlock))
        return cls(spec, blocks, dict(found_by))  # type: ignore[arg-type]

    def check(self, spec: ArchSpec) -> None:
        """Raise :class:`TrainError` unless these scales fit ``spec`` (same depths, widths and groups)."""
        if _shape(spec) != _shape(self.spec):
            raise TrainError(f"the scales {('in ' + self.source) if self.source else ''} belong to {self.spec}, "
                             f"not to {spec}", "use scales found for this architecture, or let the hyper-search "
                             "stage find them")

    @property
    def sha256(self) -> str:
        """sha256 of the canonical JSON of the spec and the values (what the masks depend on)."""
        body = {"spec": self.spec.to_string(), "blocks": [_block_dict(b) for b in self.blocks]}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        """Provenance for checkpoints, metrics and model cards: hash, spec, file and how they were found."""
        return {"sha256": self.sha256, "spec": self.spec.to_string(), "file": self.source,
                "found_by": dict(self.found_by)}

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (the file format)."""
        return {"format": FORMAT, "version": VERSION, "spec": self.spec.to_dict(), "found_by": dict(self.found_by),
                "blocks": [_block_dict(b) for b in self.blocks]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> Scales:
        """Inverse of :meth:`to_dict`; a foreign or malformed body is a :class:`TrainError`."""
        where = f"scales file {source}" if source else "the scales record"
        if not isinstance(data, Mapping) or data.get("format") != FORMAT or data.get("version") != VERSION:
            raise TrainError(f"{where} is not a version-{VERSION} RepOpt scales file",
                             "give a file written by the hyper-search stage (docs/repopt.md)")
        try:
            blocks = tuple(BlockScales(str(b["name"]), tuple(b["conv"]), tuple(b["one_by_one"]),
                                       None if b.get("identity") is None else tuple(b["identity"]))
                           for b in data["blocks"])
            spec = ArchSpec.from_dict(dict(data["spec"]))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise TrainError(f"{where} is malformed ({exc})", "the file is damaged; find the scales again") from exc
        return cls(spec, blocks, dict(data.get("found_by") or {}), source)

    @classmethod
    def read(cls, path: str | os.PathLike[str], spec: ArchSpec | None = None) -> Scales:
        """Read a scales JSON file, checked against ``spec`` when given."""
        target = Path(path)
        try:
            body = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TrainError(f"cannot read scales file {target}: {getattr(exc, 'strerror', None) or exc}",
                             "give the JSON file of a hyper-search run, or let the stage find the scales") from exc
        scales = cls.from_dict(body, str(target))
        if spec is not None:
            scales.check(spec)
        return scales

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the scales as JSON, atomically; return the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target) as handle:
            json.dump(self.to_dict(), handle, indent=1)
            handle.write("\n")
        return target


def _block_dict(b: BlockScales) -> dict[str, Any]:
    return {"name": b.name, "conv": list(b.conv), "one_by_one": list(b.one_by_one),
            "identity": None if b.identity is None else list(b.identity)}


# -- masks, initialization and the optimizers ------------------------------------------------------------

def _target_kernels(model: nn.Module, scales: Scales) -> list[tuple[RepBlock, nn.Parameter, BlockScales]]:
    """(block, 3×3 kernel, its scales) of every block of a plain ``repopt`` train-form model."""
    blocks = blocks_of(model)
    if [n for n, _ in blocks] != [b.name for b in scales.blocks]:
        raise TrainError("the model's blocks are not the ones the scales name", "build the model of the scales' spec")
    out = []
    for (name, block), s in zip(blocks, scales.blocks):
        dense = getattr(block, "dense", None)
        if dense is None or not hasattr(dense, "conv"):
            raise TrainError(f"block {name} is not a plain 3×3 conv-BN block", "RepOpt trains the repopt block")
        out.append((block, dense.conv.weight, s))
    return out


def grad_masks(model: nn.Module, scales: Scales, power: int = 2) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """(kernel, mask) for every block: s₃^p everywhere, + s₁^p at the centre, + 1 on the identity diagonal's
    centre (``power`` 2 for SGD, 1 for AdamW)."""
    masks = []
    for block, weight, s in _target_kernels(model, scales):
        s3, s1, sid = s.tensors(weight)
        mask = (s3 ** power).expand_as(weight).clone()
        mask[:, :, 1:2, 1:2] += s1 ** power
        if sid is not None:
            mask += identity_kernel(block.cin, block.groups, weight)
        masks.append((weight, mask))
    return masks


@torch.no_grad()
def init_from_scales(model: nn.Module, scales: Scales) -> None:
    """Set each block kernel to ``s₃·W₃ + pad(s₁·W₁) + s_id·I``: W₃ its current value, W₁ a fresh 1×1 kernel
    with torch's default conv initialization (drawn from the global RNG)."""
    for block, weight, s in _target_kernels(model, scales):
        s3, s1, sid = s.tensors(weight)
        w1 = torch.empty(weight.shape[0], weight.shape[1], 1, 1, dtype=weight.dtype, device=weight.device)
        nn.init.kaiming_uniform_(w1, a=math.sqrt(5))  # what nn.Conv2d.reset_parameters does
        merged = weight * s3 + F.pad(w1 * s1, [1, 1, 1, 1])
        if sid is not None:
            merged += identity_kernel(block.cin, block.groups, weight) * sid
        weight.copy_(merged)


class _Masked(torch.optim.Optimizer):
    """Mixin before a torch optimizer: ``masks`` are (parameter, constant mask) pairs, rebuilt from the scales
    (never in the state dict); :meth:`step` multiplies each gradient by its mask (in place, after DDP's
    all-reduce and GradScaler's unscaling), then takes the wrapped optimizer's step."""

    def __init__(self, params: Any, masks: Iterable[tuple[torch.Tensor, torch.Tensor]], **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.masks = list(masks)

    def step(self, closure: Any = None) -> Any:
        """Mask the gradients, then the wrapped optimizer's step (``closure`` re-evaluates the loss first)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for param, mask in self.masks:
            if param.grad is not None:
                param.grad.mul_(mask)
        super().step()
        return loss


class RepOptSGD(_Masked, torch.optim.SGD):
    """SGD on masked gradients: weight decay and momentum act on the masked gradient (the official rule)."""


class RepOptAdamW(_Masked, torch.optim.AdamW):
    """AdamW on masked gradients (build the masks with ``power=1``, as the official code does; unlike SGD this
    is not an exact equivalent of the multi-branch block)."""


def masked_sgd(model: nn.Module, scales: Scales, groups: list[dict[str, Any]], lr: float, momentum: float,
               nesterov: bool) -> RepOptSGD:
    """The target's optimizer: :class:`RepOptSGD` over ``groups`` with the SGD masks of ``scales``."""
    return RepOptSGD(groups, grad_masks(model, scales, power=2), lr=lr, momentum=momentum, nesterov=nesterov)


# -- budgets -----------------------------------------------------------------------------------------------

def hs_config(config: TrainConfig) -> TrainConfig:
    """The hyper-search stage's config: the target's recipe and settings at :data:`HS_SHARE` of its epochs
    (at least one), step cap and warm-up, or ``config.hs_steps`` steps when set."""
    if config.hs_steps is not None:
        return config.replace(max_steps=config.hs_steps, warmup_epochs=config.warmup_epochs * HS_SHARE)
    body = config.to_dict()
    body.update(epochs=max(1, math.ceil(HS_SHARE * config.epochs)), warmup_epochs=config.warmup_epochs * HS_SHARE,
                max_steps=None if config.max_steps is None else max(1, math.ceil(HS_SHARE * config.max_steps)))
    return TrainConfig.from_dict(body)


def within_budget(config: TrainConfig, total_steps: int) -> TrainConfig:
    """``config`` with the hyper-search stage carved out of a ``total_steps`` budget (the proxy's): the stage
    gets ``ceil(HS_SHARE · total_steps)`` steps, the target the rest, so a repopt spec trains no more steps
    than any other spec."""
    hs = max(1, math.ceil(HS_SHARE * total_steps))
    return config.replace(hs_steps=hs, max_steps=max(1, total_steps - hs))


def scales_for_config(config: TrainConfig, spec: ArchSpec) -> Scales | None:
    """The scales file a config names, read and checked (None when the config asks for the search stage);
    a file given for another block than repopt is a :class:`TrainError`."""
    if config.scales == SEARCH_SCALES:
        return None
    if spec.block != "repopt":
        raise TrainError(f"scales drive the repopt block's gradient masks, but {spec} uses the {spec.block} block",
                         "train the repopt block, or leave the scales out")
    return Scales.read(config.scales, spec)
