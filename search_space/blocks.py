"""RepVGG, QARepVGG and RepOpt-VGG blocks, and the one conv-BN fusion they share.

Train form (RepVGG): ``relu(bn(conv3x3(x)) + bn(conv1x1(x)) + bn(x))``, the identity branch only where
input and output shapes agree. QARepVGG removes the BN of the 1×1 and identity branches and puts one BN
after the sum: ``relu(bn(bn(conv3x3(x)) + conv1x1(x) + x))``. RepOpt-VGG trains the plain
``relu(bn(conv3x3(x)))`` (its multi-branch prior lives in the optimizer, :mod:`trials.repopt`). All
re-parameterize into one 3×3 conv with bias (:meth:`reparameterize`, idempotent). ``deploy=True`` builds
that form directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fuse_conv_bn(
    weight: torch.Tensor, bn: nn.BatchNorm2d, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold eval-mode ``bn(conv(x) + bias)`` into one conv: returns the new (weight, bias)."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std  # (Cout,)
    shift = bn.bias - bn.running_mean * scale
    if bias is not None:
        shift = shift + bias * scale
    return weight * scale.reshape(-1, 1, 1, 1), shift


def identity_kernel(channels: int, groups: int, like: torch.Tensor) -> torch.Tensor:
    """3×3 kernel (C, C/g, 3, 3) that copies each channel: the identity branch as a conv."""
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, 3, 3, dtype=like.dtype, device=like.device)
    idx = torch.arange(channels, device=like.device)
    kernel[idx, idx % per_group, 1, 1] = 1.0
    return kernel


class ConvBN(nn.Sequential):
    """Conv without bias followed by BatchNorm."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the equivalent conv with bias."""
        return fuse_conv_bn(self.conv.weight, self.bn)


class RepBlock(nn.Module):
    """Base of both block types: the deploy conv, the 1×1 branch's striding, and re-parameterization."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int, deploy: bool) -> None:
        super().__init__()
        self.cin, self.cout, self.stride, self.groups = cin, cout, stride, groups
        self.has_identity = cin == cout and stride == 1
        self.act = nn.ReLU()
        self.reparam: nn.Conv2d | None = None
        if deploy:
            self.reparam = nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=True)

    @property
    def deploy(self) -> bool:
        """True once the block is a single 3×3 conv."""
        return self.reparam is not None

    def _subsample(self, x: torch.Tensor) -> torch.Tensor:
        # A stride-s 1×1 conv reads every s-th pixel; slicing first and convolving at stride 1 computes
        # the same and avoids a channels_last backward crash of strided 1×1 convs with few input channels.
        return x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, Cin, H, W) -> (N, Cout, H/s, W/s)
        if self.reparam is not None:
            return self.act(self.reparam(x))
        return self.act(self.branches(x))

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of the train-form branches before the activation."""
        raise NotImplementedError

    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the single 3×3 conv equal to the train-form branches in eval mode."""
        raise NotImplementedError

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the branches by one 3×3 conv with bias (idempotent)."""
        if self.reparam is not None:
            return
        weight, bias = self.equivalent_kernel()
        # skip_init: the fused values overwrite the weights at once, so a random init would be wasted work
        # (it dominated re-parameterizing the B-family models)
        conv = torch.nn.utils.skip_init(
            nn.Conv2d, self.cin, self.cout, 3, self.stride, 1, groups=self.groups, bias=True,
            device=weight.device, dtype=weight.dtype,
        )
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        for name in [n for n, _ in self.named_children() if n not in ("act",)]:
            delattr(self, name)
        self.reparam = conv


class RepVGGBlock(RepBlock):
    """RepVGG block: 3×3 conv-BN + 1×1 conv-BN + identity BN (where shapes allow), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 1, deploy: bool = False) -> None:
        super().__init__(cin, cout, stride, groups, deploy)
        if not deploy:
            self.dense = ConvBN(cin, cout, 3, stride, groups)
            self.one_by_one = ConvBN(cin, cout, 1, 1, groups)
            self.identity = nn.BatchNorm2d(cout) if self.has_identity else None

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dense(x) + self.one_by_one(self._subsample(x))
        return out + self.identity(x) if self.identity is not None else out

    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        w3, b3 = self.dense.fused()
        w1, b1 = self.one_by_one.fused()
        weight, bias = w3 + F.pad(w1, [1, 1, 1, 1]), b3 + b1
        if self.identity is not None:
            wi, bi = fuse_conv_bn(identity_kernel(self.cin, self.groups, w3), self.identity)
            weight, bias = weight + wi, bias + bi
        return weight, bias


class QARepVGGBlock(RepBlock):
    """QARepVGG block: 3×3 conv-BN + bare 1×1 conv + bare identity, one BN after the sum, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 1, deploy: bool = False) -> None:
        super().__init__(cin, cout, stride, groups, deploy)
        if not deploy:
            self.dense = ConvBN(cin, cout, 3, stride, groups)
            self.one_by_one = nn.Conv2d(cin, cout, 1, 1, 0, groups=groups, bias=False)
            self.bn = nn.BatchNorm2d(cout)

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dense(x) + self.one_by_one(self._subsample(x))
        return self.bn(out + x if self.has_identity else out)

    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        w3, b3 = self.dense.fused()
        weight = w3 + F.pad(self.one_by_one.weight, [1, 1, 1, 1])
        if self.has_identity:
            weight = weight + identity_kernel(self.cin, self.groups, w3)
        return fuse_conv_bn(weight, self.bn, b3)


class RepOptBlock(RepBlock):
    """RepOpt-VGG block: one 3×3 conv-BN, then ReLU (a plain VGG layer); it deploys as RepVGG's fused conv."""

    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 1, deploy: bool = False) -> None:
        super().__init__(cin, cout, stride, groups, deploy)
        if not deploy:
            self.dense = ConvBN(cin, cout, 3, stride, groups)

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x)

    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dense.fused()


BLOCKS: dict[str, type[RepBlock]] = {"repvgg": RepVGGBlock, "qarepvgg": QARepVGGBlock, "repopt": RepOptBlock}
