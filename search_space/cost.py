"""Analytic cost model from the spec alone (no torch): per-layer MACs, params, bytes, on-chip memory.

Counting conventions (the deploy form: every block is one fused 3×3 conv with bias, then the head):

* **MACs** of a conv: ``Cin/g · Cout · 9 · Hout · Wout``; the head adds ``C · classes``.
* **Params**: fused 3×3 weights + biases, plus the linear head with bias.
* **On-chip memory** of a layer (the seed's strategy, parameterized by data widths)::

      weights·w_bytes + Cout·bias_bytes + Hout·Wout·Cout·(accum_bytes + act_bytes)

  i.e. the layer's weights and biases, its accumulator output, and that output re-quantized as the next
  layer's input. The peak over layers is what must fit on chip.
* **Legacy FLOPs** reproduce the seed's "Flops" column: thop 0.1.x on the fused model fed an *unbatched*
  ``(3, H, W)`` input reads the input *height* where the input channel count belongs, so a conv counts
  ``Cout·Hout·Wout · (Hin // g) · 9``; it adds ``C · classes`` for the head and ``(W_last + 1) · C`` for
  the global pool. The figure is not MACs; it is kept only so the seed's table can be matched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from search_space.spec import ArchSpec


@dataclass(frozen=True)
class MemoryStrategy:
    """Bytes per element of weights, biases, accumulators and activations on the target."""

    name: str
    weight_bytes: float
    bias_bytes: float
    accum_bytes: float
    act_bytes: float


#: The seed's strategy: int8 weights and biases, int32 accumulator, int8 re-quantized copy.
INT8 = MemoryStrategy("int8", 1, 1, 4, 1)
#: fp16 end to end (weights, biases, accumulators and activations).
FP16 = MemoryStrategy("fp16", 2, 2, 2, 2)
MEMORY_STRATEGIES = {s.name: s for s in (INT8, FP16)}


@dataclass(frozen=True)
class ConvLayer:
    """One conv of the deploy form: where it sits and its shape. Shared by the cost model and the builder."""

    name: str  # "stage0", "stage3.5"
    stage: int
    index: int  # block index within its stage
    cin: int
    cout: int
    stride: int
    groups: int
    h_in: int
    h_out: int


def conv_out(size: int, stride: int) -> int:
    """Output size of a 3×3 conv with padding 1."""
    return (size - 1) // stride + 1


def layer_plan(spec: ArchSpec) -> list[ConvLayer]:
    """The deploy form's convs in order: stage 0, then every block of stages 1–4."""
    h = spec.resolution
    layers = [ConvLayer("stage0", 0, 0, 3, spec.stem_width, 2, 1, h, conv_out(h, 2))]
    cin, h, layer_index = spec.stem_width, conv_out(h, 2), 1
    for stage, (depth, cout) in enumerate(zip(spec.depths, spec.stage_widths), 1):
        for index in range(depth):
            stride = 2 if index == 0 else 1
            h_out = conv_out(h, stride)
            groups = spec.layer_groups(layer_index)
            layers.append(ConvLayer(f"stage{stage}.{index}", stage, index, cin, cout, stride, groups, h, h_out))
            cin, h, layer_index = cout, h_out, layer_index + 1
    return layers


@dataclass(frozen=True)
class LayerCost:
    """Cost of one deploy-form layer under a memory strategy (bytes, not KiB)."""

    name: str
    kind: str  # "conv3x3" or "linear"
    cin: int
    cout: int
    groups: int
    stride: int
    h_out: int
    w_out: int
    macs: int
    params: int
    weight_bytes: float
    activation_bytes: float
    memory_bytes: float


@dataclass(frozen=True)
class CostReport:
    """Per-layer costs and totals of one spec."""

    spec: ArchSpec
    strategy: MemoryStrategy
    layers: tuple[LayerCost, ...]
    macs: int
    params: int
    train_params: int
    peak_memory_bytes: float
    peak_layer: str
    legacy_flops: int
    weight_bytes: float
    activation_elements: int
    conv_count: int

    @property
    def peak_memory_kib(self) -> float:
        """Peak on-chip memory in KiB (the unit the seed printed as "M")."""
        return self.peak_memory_bytes / 1024

    def totals(self) -> dict[str, object]:
        """Totals as a flat, JSON-ready dict."""
        return {
            "spec": self.spec.to_string(),
            "macs": self.macs,
            "params": self.params,
            "train_params": self.train_params,
            "peak_memory_kib": self.peak_memory_kib,
            "peak_layer": self.peak_layer,
            "legacy_flops": self.legacy_flops,
            "weight_bytes": self.weight_bytes,
            "activation_elements": self.activation_elements,
            "conv_count": self.conv_count,
            "memory_strategy": self.strategy.name,
        }

    def layer_rows(self) -> list[dict[str, object]]:
        """Per-layer rows as JSON-ready dicts."""
        return [asdict(layer) for layer in self.layers]


def _train_block_params(layer: ConvLayer, block: str) -> int:
    """Learnable params of one train-form block (BN running stats are buffers, not params)."""
    w3 = layer.cin // layer.groups * layer.cout * 9
    w1 = layer.cin // layer.groups * layer.cout
    has_identity = layer.cin == layer.cout and layer.stride == 1
    if block == "qarepvgg":  # 3×3 conv-BN, bare 1×1 conv, bare identity, one BN after the sum
        return w3 + 2 * layer.cout + w1 + 2 * layer.cout
    return w3 + 2 * layer.cout + w1 + 2 * layer.cout + (2 * layer.cin if has_identity else 0)


def analyze(spec: ArchSpec, strategy: MemoryStrategy = INT8) -> CostReport:
    """Per-layer table and totals of ``spec`` under ``strategy``; pure Python, microseconds per spec."""
    s = strategy
    rows: list[LayerCost] = []
    train_params = legacy = act_elems = 0
    for layer in layer_plan(spec):
        weights = layer.cin // layer.groups * layer.cout * 9
        out_elems = layer.h_out * layer.h_out * layer.cout
        macs = weights * layer.h_out * layer.h_out
        act_bytes = out_elems * s.act_bytes
        memory = weights * s.weight_bytes + layer.cout * s.bias_bytes + out_elems * (s.accum_bytes + s.act_bytes)
        rows.append(
            LayerCost(layer.name, "conv3x3", layer.cin, layer.cout, layer.groups, layer.stride, layer.h_out,
                      layer.h_out, macs, weights + layer.cout, weights * s.weight_bytes, act_bytes, memory)
        )
        train_params += _train_block_params(layer, spec.block)
        legacy += out_elems * (layer.h_in // layer.groups) * 9
        act_elems += out_elems
    c, k, w_last = rows[-1].cout, spec.num_classes, rows[-1].w_out
    head_w = c * k
    rows.append(
        LayerCost("head", "linear", c, k, 1, 1, 1, 1, head_w, head_w + k, head_w * s.weight_bytes, k * s.act_bytes,
                  head_w * s.weight_bytes + k * s.bias_bytes + k * (s.accum_bytes + s.act_bytes))
    )
    train_params += head_w + k
    legacy += head_w + (w_last + 1) * c
    peak = max(rows, key=lambda r: r.memory_bytes)
    return CostReport(
        spec=spec,
        strategy=s,
        layers=tuple(rows),
        macs=sum(r.macs for r in rows),
        params=sum(r.params for r in rows),
        train_params=train_params,
        peak_memory_bytes=peak.memory_bytes,
        peak_layer=peak.name,
        legacy_flops=legacy,
        weight_bytes=sum(r.weight_bytes for r in rows),
        activation_elements=act_elems,
        conv_count=len(rows) - 1,
    )
