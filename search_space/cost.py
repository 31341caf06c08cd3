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
from functools import cached_property

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
    """Totals of one spec; the per-layer table ``layers`` is built on first access.

    The totals come from a closed form over the few distinct layer shapes of each stage (microseconds per
    spec, independent of depth); ``layers`` walks every layer and always agrees with them.
    """

    spec: ArchSpec
    strategy: MemoryStrategy
    macs: int
    params: int
    train_params: int
    peak_memory_bytes: float
    peak_layer: str
    legacy_flops: int
    weight_bytes: float
    activation_elements: int
    conv_count: int

    @cached_property
    def layers(self) -> tuple[LayerCost, ...]:
        """Per-layer costs, deploy-form order: the convs of stages 0–4, then the head."""
        return layer_costs(self.spec, self.strategy)

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


def _head_cost(c: int, k: int, s: MemoryStrategy) -> LayerCost:
    """The linear head ``C → classes`` with bias."""
    head_w = c * k
    memory = head_w * s.weight_bytes + k * s.bias_bytes + k * (s.accum_bytes + s.act_bytes)
    return LayerCost("head", "linear", c, k, 1, 1, 1, 1, head_w, head_w + k, head_w * s.weight_bytes,
                     k * s.act_bytes, memory)


def layer_costs(spec: ArchSpec, strategy: MemoryStrategy = INT8) -> tuple[LayerCost, ...]:
    """Every deploy-form layer's cost, one row per layer (the reference that :func:`analyze` must agree with)."""
    s = strategy
    rows: list[LayerCost] = []
    for layer in layer_plan(spec):
        weights = layer.cin // layer.groups * layer.cout * 9
        out_elems = layer.h_out * layer.h_out * layer.cout
        memory = weights * s.weight_bytes + layer.cout * s.bias_bytes + out_elems * (s.accum_bytes + s.act_bytes)
        rows.append(
            LayerCost(layer.name, "conv3x3", layer.cin, layer.cout, layer.groups, layer.stride, layer.h_out,
                      layer.h_out, weights * layer.h_out * layer.h_out, weights + layer.cout,
                      weights * s.weight_bytes, out_elems * s.act_bytes, memory)
        )
    rows.append(_head_cost(rows[-1].cout, spec.num_classes, s))
    return tuple(rows)


def _layer_kinds(spec: ArchSpec, widths: tuple[int, ...]) -> list[tuple[int, int, int, int, int, int, int, int, int]]:
    """The distinct conv shapes of the deploy form in order of first occurrence.

    Rows are ``(stage, index of first occurrence, count, cin, cout, stride, groups, h_in, h_out)``. Every
    block of a stage after the first has the same shape; with ``groups`` > 1 they alternate between grouped
    and dense (even global layer indices are grouped), so a stage has at most three kinds of layer.
    """
    g = spec.groups
    h = spec.resolution
    h_out = (h - 1) // 2 + 1
    cin = spec.stem_width
    kinds = [(0, 0, 1, 3, cin, 2, 1, h, h_out)]
    h, first = h_out, 1  # `first`: global layer index (1-based over stages 1–4) of the stage's block 0
    for stage, (depth, cout) in enumerate(zip(spec.depths, widths), 1):
        h_out = (h - 1) // 2 + 1
        kinds.append((stage, 0, 1, cin, cout, 2, g if g > 1 and first % 2 == 0 else 1, h, h_out))
        rest = depth - 1  # blocks 1..depth-1: stride 1, cout → cout
        if rest and g == 1:
            kinds.append((stage, 1, rest, cout, cout, 1, 1, h_out, h_out))
        elif rest:
            g1 = g if (first + 1) % 2 == 0 else 1
            kinds.append((stage, 1, (rest + 1) // 2, cout, cout, 1, g1, h_out, h_out))
            if rest > 1:
                kinds.append((stage, 2, rest // 2, cout, cout, 1, g if g1 == 1 else 1, h_out, h_out))
        cin, h, first = cout, h_out, first + depth
    return kinds


def analyze(spec: ArchSpec, strategy: MemoryStrategy = INT8) -> CostReport:
    """Totals of ``spec`` under ``strategy`` (per-layer rows on demand); pure Python, microseconds per spec."""
    s = strategy
    wb, bb, ob = s.weight_bytes, s.bias_bytes, s.accum_bytes + s.act_bytes
    qa, plain = spec.block == "qarepvgg", spec.block == "repopt"
    widths = spec.stage_widths
    macs = params = train_params = legacy = act_elems = 0
    weight_bytes: float = 0
    peak, peak_at = -1.0, (0, 0)
    kinds = _layer_kinds(spec, widths)
    for stage, index, count, cin, cout, stride, groups, h_in, h_out in kinds:
        w1 = cin // groups * cout  # the 1×1 branch's weights; the fused 3×3 conv has 9× as many
        weights = 9 * w1
        pixels = h_out * h_out
        out_elems = pixels * cout
        macs += count * weights * pixels
        params += count * (weights + cout)
        # Train form (BN running stats are buffers): 3×3 conv + BN, 1×1 conv + BN (RepVGG) or bare 1×1 conv
        # and one BN after the sum (QARepVGG), plus RepVGG's identity BN where shapes allow; RepOpt-VGG trains
        # the plain 3×3 conv + BN (its deploy costs are RepVGG's: the loop above is block-independent).
        if plain:
            train_params += count * (weights + 2 * cout)
        else:
            identity_bn = 2 * cin if not qa and stride == 1 and cin == cout else 0
            train_params += count * (weights + w1 + 4 * cout + identity_bn)
        legacy += count * out_elems * (h_in // groups) * 9
        act_elems += count * out_elems
        weight_bytes += count * weights * wb
        memory = weights * wb + cout * bb + out_elems * ob
        if memory > peak:  # strict: the first layer reaching the peak names it
            peak, peak_at = memory, (stage, index)
    c, k, w_last = widths[3], spec.num_classes, kinds[-1][8]
    head_w = c * k  # the linear head, as in _head_cost (inlined: this function runs once per trial spec)
    head_memory = head_w * wb + k * bb + k * ob
    peak_layer = "stage0" if peak_at == (0, 0) else f"stage{peak_at[0]}.{peak_at[1]}"
    if head_memory > peak:
        peak, peak_layer = head_memory, "head"
    return CostReport(
        spec=spec,
        strategy=s,
        macs=macs + head_w,
        params=params + head_w + k,
        train_params=train_params + head_w + k,
        peak_memory_bytes=peak,
        peak_layer=peak_layer,
        legacy_flops=legacy + head_w + (w_last + 1) * c,  # thop: head C·classes, global pool (W_last + 1)·C
        weight_bytes=weight_bytes + head_w * wb,
        activation_elements=act_elems,
        conv_count=spec.num_layers,
    )
