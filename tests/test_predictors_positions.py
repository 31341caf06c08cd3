"""The ``positions`` feature (Σ H_out·W_out over the conv layers) and the ``spatial`` family that uses it."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from predictors import FAMILIES, REFERENCE, fit_predictors, load_table, spec_features
from search_space import ArchSpec, analyze, resolve_arch
from search_space.model import build_model

SPECS = [
    ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), "repvgg", 1, 32, 10),
    ArchSpec((2, 3, 1, 2), (0.5, 1.0, 0.75, 2.5), "repvgg", 1, 57, 10),  # odd sizes: every stride rounds up
    ArchSpec((1, 4, 2, 1), (0.75, 0.75, 1.0, 1.0), "repvgg", 4, 48, 10),  # grouped layers
    ArchSpec((2, 2, 2, 1), (1.0, 1.0, 1.0, 1.0), "qarepvgg", 1, 33, 10),
]
HEADER = "device,precision,arch,latency_ms,status\n"


def raw_positions(spec: ArchSpec) -> float:
    """The feature in raw units (output positions), undoing the A0 scaling."""
    return float(spec_features(spec).vector(("positions",))[0] * REFERENCE["positions"])


@functools.cache
def hooked_positions(spec: ArchSpec) -> tuple[int, int]:
    """(number of convs, Σ H·W of their outputs) of the built deploy-form model, seen by forward hooks."""
    model = build_model(spec, deploy=True).eval()
    shapes: list[torch.Size] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: shapes.append(out.shape))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, spec.resolution, spec.resolution))
    for hook in hooks:
        hook.remove()
    return len(shapes), sum(s[2] * s[3] for s in shapes)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.to_string())
def test_positions_equal_the_built_models_conv_outputs(spec):
    convs, positions = hooked_positions(spec)
    assert convs == analyze(spec).conv_count  # every conv was seen: the sum is over all of them
    assert raw_positions(spec) == positions


def test_positions_of_a0_by_hand_and_blind_to_channels():
    """A0 at 112 px, depths 2-4-14-1 after the stride-2 stem: 56² + 2·28² + 4·14² + 14·7² + 4² = 6190; widening
    every stage multiplies MACs but not output positions."""
    a0 = resolve_arch("A0", 112, 89)
    assert REFERENCE["positions"] == raw_positions(a0) == 56**2 + 2 * 28**2 + 4 * 14**2 + 14 * 7**2 + 4**2
    wide = a0.replace(widths=tuple(2 * w for w in a0.widths))
    assert raw_positions(wide) == raw_positions(a0) and analyze(wide).macs > 3 * analyze(a0).macs


def random_specs(n: int, seed: int) -> list[ArchSpec]:
    rng = np.random.default_rng(seed)
    specs: list[ArchSpec] = []
    while len(specs) < n:
        spec = ArchSpec(tuple(int(d) for d in rng.integers(1, 5, 4)),
                        tuple(float(w) for w in rng.choice([0.25, 0.5, 0.75, 1.0, 1.5], 4)), "repvgg", 1,
                        int(rng.choice([32, 48, 64, 96, 112])), 10)
        if spec not in specs:
            specs.append(spec)
    return specs


#: ms each term costs A0: a per-position overhead half of A0's compute, no traffic term (a zero to recover)
LAW = {"macs": 1.0, "traffic_bytes": 0.0, "conv_count": 0.2, "positions": 0.5, "constant": 0.3}


def law_ms(spec: ArchSpec) -> float:
    """The law from raw counts (not from the feature code), each over A0's; positions from the hooked model."""
    counts = {"macs": lambda s: analyze(s).macs, "conv_count": lambda s: analyze(s).conv_count,
              "positions": lambda s: hooked_positions(s)[1]}
    a0 = resolve_arch("A0", 112, 89)
    return LAW["constant"] + sum(LAW[k] * f(spec) / f(a0) for k, f in counts.items())


@pytest.fixture(scope="module")
def law_table(tmp_path_factory):
    specs = random_specs(24, seed=11)
    path = tmp_path_factory.mktemp("law") / "sim.csv"
    path.write_text(HEADER + "".join(f"sim,int8,{s.to_string()},{law_ms(s)!r},ok\n" for s in specs[:12]),
                    encoding="utf-8")
    return load_table([path], include_seed=False), specs[12:]


def test_spatial_recovers_a_law_with_a_per_position_term(law_table):
    table, unseen = law_table
    predictor = fit_predictors(table, ["sim"], "spatial")["sim"]
    assert predictor.family.features == tuple(LAW) == FAMILIES["spatial"].features
    assert predictor.beta == pytest.approx([LAW[k] for k in LAW], abs=1e-7)
    assert predictor.coefficients()["positions"] * REFERENCE["positions"] == pytest.approx(LAW["positions"])
    for spec in unseen:
        assert predictor.predict_ms(spec) == pytest.approx(law_ms(spec), rel=1e-6)


def test_physical_cannot_express_the_per_position_term(law_table):
    """Without the feature the same points leave a real error on unseen specs (so the law needs it)."""
    table, unseen = law_table
    predictor = fit_predictors(table, ["sim"], "physical")["sim"]
    errors = [abs(predictor.predict_ms(s) / law_ms(s) - 1) for s in unseen]
    assert max(errors) > 0.05
