"""Domain of validity: the box of what a device measured; predictions outside it are labelled extrapolated."""

from __future__ import annotations

import json
import math

import pytest

from predictors import DOMAIN_FEATURES, DevicePredictor, Domain, PredictorError, fit_predictors, load_table
from search_space import ArchSpec, analyze, resolve_arch

SEED_ARCHS = ("A0", "N0", "N2", "M0")  # what Hexagon698 ran


def coordinates(spec):
    """The domain coordinates recomputed from the cost model (int8: one byte per weight and activation)."""
    r = analyze(spec)
    return {"macs": r.macs, "weight_bytes": r.weight_bytes, "activation_bytes": r.activation_elements,
            "resolution": spec.resolution, "conv_count": r.conv_count}


@pytest.fixture(scope="module")
def hexagon():
    return fit_predictors(load_table(), ["Hexagon698"])["Hexagon698"]


def test_domain_is_the_box_of_the_measured_specs():
    specs = [resolve_arch(a, 112, 89) for a in SEED_ARCHS]
    domain = Domain.from_specs(specs)
    coords = [coordinates(s) for s in specs]
    for i, name in enumerate(DOMAIN_FEATURES):
        assert domain.low[i] == min(c[name] for c in coords)
        assert domain.high[i] == max(c[name] for c in coords)
    for spec in specs:
        assert domain.distance(spec) == 0.0 and domain.contains(spec) and domain.describe(spec) == ""
    with pytest.raises(PredictorError):
        Domain.from_specs([])


def test_distance_is_the_largest_log_ratio_outside_the_box():
    specs = [resolve_arch(a, 112, 89) for a in SEED_ARCHS]
    domain = Domain.from_specs(specs)
    low = {n: min(coordinates(s)[n] for s in specs) for n in DOMAIN_FEATURES}
    high = {n: max(coordinates(s)[n] for s in specs) for n in DOMAIN_FEATURES}
    for spec in (resolve_arch("N2", 32, 89), resolve_arch("B3", 224, 1000), resolve_arch("N2", 96, 89)):
        c = coordinates(spec)
        expected = max(max(math.log(low[n] / c[n]), math.log(c[n] / high[n]), 0.0) for n in DOMAIN_FEATURES)
        assert domain.distance(spec) == pytest.approx(expected, rel=1e-12)
        assert expected > 0 and not domain.contains(spec)


def test_describe_names_every_coordinate_outside_farthest_first():
    domain = Domain.from_specs([resolve_arch(a, 112, 89) for a in SEED_ARCHS])
    tiny = ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), "repvgg", 1, 32, 10)
    text = domain.describe(tiny)
    c = coordinates(tiny)
    assert text.startswith(f"MACs {c['macs'] / 1e6:.3g} M below the measured 145–573 M")
    assert "resolution 32 px below the measured 112 px" in text
    assert "depth 5 convs below the measured 9–22 convs" in text
    assert len(text.split("; ")) == 5  # every coordinate is below its range
    assert domain.summary().startswith("MACs 145–573 M, weights 2.34–9.33 MiB")


def test_predictions_outside_the_measured_domain_are_labelled(hexagon):
    """The issue's Hexagon case: a d1-1-1-1 w0.25 at 32 px has 0.5 M MACs where 145–573 M were measured."""
    tiny = ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), "repvgg", 1, 32, 10)
    inside = hexagon.predict(resolve_arch("N2", 112, 89))
    outside = hexagon.predict(tiny)
    assert (inside.extrapolated, inside.extrapolation, inside.distance) == (False, "", 0.0)
    assert outside.extrapolated and outside.extrapolation == hexagon.domain.describe(tiny)
    assert outside.distance == pytest.approx(math.log(144.7e6 / analyze(tiny).macs), rel=1e-3)
    # the interval says how little is known out there
    assert outside.high / outside.low > (inside.high / inside.low) ** 5


def test_domain_round_trips_with_the_predictor(hexagon):
    data = json.loads(hexagon.to_json())
    assert data["domain"]["features"] == list(DOMAIN_FEATURES)
    loaded = DevicePredictor.from_json(hexagon.to_json())
    assert loaded.domain == hexagon.domain
    assert Domain.from_dict(hexagon.domain.to_dict()) == hexagon.domain
    data["domain"]["high"][0] *= 2  # a domain that does not match the measured specs is refused
    with pytest.raises(PredictorError, match="domain"):
        DevicePredictor.from_json(json.dumps(data))
    data["domain"]["features"] = ["macs"]
    with pytest.raises(PredictorError, match="domain"):
        DevicePredictor.from_json(json.dumps(data))
