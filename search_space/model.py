"""Model builder (train or deploy form, straight from a spec) and model-level re-parameterization."""

from __future__ import annotations

import copy

import torch
from torch import nn

from search_space.blocks import BLOCKS, RepBlock
from search_space.cost import layer_plan
from search_space.spec import ArchSpec


class RepVGG(nn.Module):
    """A RepVGG network built from an :class:`ArchSpec`: stage 0, stages 1–4, global pool, linear head.

    Module names follow the cost model's layer names (``stage0``, ``stage3[5]`` ↔ ``"stage3.5"``).
    """

    def __init__(self, spec: ArchSpec, deploy: bool = False) -> None:
        super().__init__()
        self.spec = spec
        block = BLOCKS[spec.block]
        plan = layer_plan(spec)
        stem = plan[0]
        self.stage0 = block(stem.cin, stem.cout, stem.stride, stem.groups, deploy)
        for stage in range(1, 5):
            layers = [p for p in plan if p.stage == stage]
            blocks = [block(p.cin, p.cout, p.stride, p.groups, deploy) for p in layers]
            self.add_module(f"stage{stage}", nn.Sequential(*blocks))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(spec.stage_widths[3], spec.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map before pooling: (N, 3, H, W) -> (N, C4, H/32, W/32)."""
        x = self.stage0(x)
        for stage in (self.stage1, self.stage2, self.stage3, self.stage4):
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, classes)
        return self.head(torch.flatten(self.gap(self.features(x)), 1))

    @property
    def deploy(self) -> bool:
        """True when every block is a single 3×3 conv."""
        return all(b.deploy for b in self.modules() if isinstance(b, RepBlock))


def build_model(spec: ArchSpec, deploy: bool = False) -> RepVGG:
    """The multi-branch training model of ``spec``, or with ``deploy=True`` its plain 3×3 form."""
    return RepVGG(spec, deploy=deploy)


def reparameterize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fuse every RepVGG/QARepVGG block of ``model`` into a 3×3 conv (idempotent).

    Works on a copy unless ``inplace``; the result is in eval mode. Fusion uses BN running statistics,
    so the deploy form equals the train form in eval mode, not in train mode.
    """
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    for module in list(target.modules()):
        if isinstance(module, RepBlock):
            module.reparameterize()
    return target
