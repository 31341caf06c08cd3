"""Zero-cost scores: rank untrained architectures in well under a second each, beside params and MACs.

- ``synflow`` (Tanaka et al. 2020, used as a zero-cost proxy by Abdelfattah et al. 2021): on the
  re-parameterized deploy form of the freshly initialized network (BN folded with its initial
  statistics, so it is the identity up to ``1/sqrt(1+eps)``), every parameter replaced by its absolute
  value, biases zeroed (they are zero after folding a fresh BN, and the head's bias does not change any
  weight gradient), in float64, input all ones ``1×3×R×R``, ``R = Σ logits``:
  ``synflow = Σ over conv and linear weights θ of |θ ⊙ ∂R/∂θ|``. Because that network is positive and
  bias-free, the score is exactly homogeneous in each layer's scale; we divide each layer by its mean
  |θ| before the pass and add the logs back, so ``log_synflow`` (natural log) never overflows.
  ``synflow`` is ``exp(log_synflow)`` in float64 (``inf`` only beyond 1.8e308).
- ``naswot`` (Mellor et al. 2021, "Neural Architecture Search without Training"): for one batch of N
  training images (a seeded choice, without random augmentation), the binary code ``c_i`` of image i
  is the on/off pattern of every ReLU unit of the train-form network (train mode, as in the paper's
  code); ``K_H[i, j] = N_A - d_H(c_i, c_j) = c_i·c_j + (1-c_i)·(1-c_j)``; ``naswot = log|det K_H|``
  (``-inf`` if K_H is singular, e.g. duplicate images). Averaged over ``n_batches``.
- ``grad_norm`` (Abdelfattah et al. 2021): Σ over conv and linear weights of ``‖∂CE/∂θ‖₂`` on the same
  batch, averaged over batches.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from search_space.cost import analyze
from search_space.model import build_model, reparameterize
from search_space.spec import ArchSpec
from trials.distributed import torch_threads
from trials.errors import TrainError
from trials.proxy import embedded_data, fetch_items, kept_rng, plain_train_set, resize


def _weights(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def synflow_log(spec: ArchSpec, seed: int = 0) -> float:
    """Natural log of the SynFlow score of ``spec`` at initialization (see the module docstring)."""
    torch.manual_seed(seed)
    model = reparameterize(build_model(spec), inplace=True).double()
    log_scale = 0.0
    with torch.no_grad():
        for layer in _weights(model):
            w = layer.weight.abs()
            scale = float(w.mean())
            if scale <= 0:
                return -math.inf  # a layer of zeros blocks every path
            layer.weight.copy_(w / scale)
            log_scale += math.log(scale)
            if layer.bias is not None:
                layer.bias.zero_()
    x = torch.ones(1, 3, spec.resolution, spec.resolution, dtype=torch.float64)
    model(x).sum().backward()
    score = sum(float((layer.weight.detach() * layer.weight.grad).abs().sum()) for layer in _weights(model))
    return math.log(score) + log_scale if score > 0 else -math.inf


def naswot_kernel(codes: torch.Tensor) -> torch.Tensor:
    """``K_H`` from binary codes (N, N_A): ``c·cᵀ + (1-c)·(1-c)ᵀ`` = units minus Hamming distance."""
    c = codes.to(torch.float64)
    return c @ c.T + (1 - c) @ (1 - c).T


def naswot_score(model: nn.Module, images: torch.Tensor) -> float:
    """``log|det K_H|`` of ``model``'s ReLU codes on ``images`` (N, 3, R, R)."""
    n = images.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64)

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal kernel
        kernel = kernel + naswot_kernel(output.detach().reshape(n, -1) > 0)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) > 0 else -math.inf


def grad_norm_score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Σ of the L2 norms of the CE-loss gradients of every conv and linear weight."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    total = sum(float(layer.weight.grad.norm()) for layer in _weights(model) if layer.weight.grad is not None)
    model.zero_grad(set_to_none=True)
    return total


def _batches(data: Any, n_batches: int, batch_size: int, resolution: int, seed: int) -> list[tuple]:
    images_set = plain_train_set(data)  # no random augmentation: the scores are deterministic
    n = len(images_set)
    if n < 2:
        raise TrainError(f"zero-cost scores need at least 2 training images, got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    out = []
    for b in range(n_batches):
        idx = order[b * batch_size : (b + 1) * batch_size] or order[:batch_size]
        images, labels = fetch_items(images_set, idx)
        out.append((resize(images, resolution), labels))
    return out


def zero_cost_scores(
    spec: ArchSpec,
    data: Any = None,
    n_batches: int = 1,
    *,
    batch_size: int = 64,
    seed: int = 0,
    threads: int | None = 1,
) -> dict[str, float]:
    """Zero-cost scores of ``spec`` at initialization, with its params and MACs.

    ``data`` is a DataBundle (None: the embedded digits at the spec's resolution); its images are
    resized to the spec's resolution if they differ, and the head gets the data's class count.
    ``threads`` as in :class:`trials.proxy.ProxyConfig` (None: the caller's torch setting); the caller's
    global RNG states are restored afterwards.
    Returns ``{"synflow", "log_synflow", "naswot", "grad_norm", "params", "macs"}``.
    """
    if n_batches < 1:
        raise TrainError(f"n_batches must be at least 1, got {n_batches}")
    if data is None:
        data = embedded_data(spec.resolution, seed)
    spec = spec.replace(num_classes=len(data.classes))
    batches = _batches(data, n_batches, batch_size, spec.resolution, seed)
    with torch_threads(threads), kept_rng():
        torch.manual_seed(seed)
        model = build_model(spec).train()
        naswot = [naswot_score(model, x) for x, _ in batches]
        grads = [grad_norm_score(model, x, y) for x, y in batches]
        log_syn = synflow_log(spec, seed)
    report = analyze(spec)
    return {
        "synflow": math.exp(log_syn) if log_syn < 709.0 else math.inf,
        "log_synflow": log_syn,
        "naswot": sum(naswot) / len(naswot),
        "grad_norm": sum(grads) / len(grads),
        "params": float(report.params),
        "macs": float(report.macs),
    }
