"""The int8 budget: the export climbs per-tensor → per-channel → more images → other calibrations until the
selection drop is within budget, records every attempt, and says so plainly when nothing meets it.

The models are built so the answer is known in advance: a trained tiny net whose weights get an outlier
that cannot change any fp32 output (it multiplies an input channel that is always exactly zero) but that
sets the per-tensor weight scale of its layer, so per-tensor int8 rounds every other weight of that layer
to zero. (Scaling a live channel ×100 and its consumers ÷100 would not isolate the weight scale: that
channel's activation grows ×100 too, and activations are quantized per tensor whatever the weights are.)
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from search_space import resolve_arch
from search_space.model import reparameterize
from trials.errors import ExportError
from trials.export import export_model
from trials.export_stages import LatencyOptions, load_images, run_torch
from trials.int8_stage import Int8Budget, Int8Judge, QuantizeOptions
from trials.model_card import load_card, validate_card

SPEC = resolve_arch("repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32_c10")
FAST = LatencyOptions(warmup=1, runs=2, sessions=1)
QUICK = dict(calibration_images=16, more_images=2)
DEAD, OUTLIER_OUT = 0, 0  # stage1's dead output channel; the stage2 output channel that carries the outlier


@pytest.fixture(scope="module")
def data():
    from trials.data import load_data

    return load_data(None, 32)


@pytest.fixture(scope="module")
def normal(data) -> nn.Module:
    """A trained deploy-form net with stage1's channel DEAD always exactly zero (weights 0, bias −1) and
    stage2's output channel OUTLIER_OUT the same: both may then carry any weight without changing fp32."""
    from trials.config import TrainConfig
    from trials.train import train

    torch.manual_seed(0)
    config = TrainConfig(epochs=4, batch_size=32, lr=0.1, warmup_epochs=0.5, seed=0, device="cpu", recipe=data.recipe)
    deploy = reparameterize(train(SPEC, data, config).model.cpu().float())
    with torch.no_grad():
        for conv, channel in ((_conv(deploy, 1), DEAD), (_conv(deploy, 2), OUTLIER_OUT)):
            conv.weight[channel] = 0.0
            conv.bias[channel] = -1.0
    return deploy


def _conv(model: nn.Module, index: int) -> nn.Conv2d:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)][index]


def _with_outlier(model: nn.Module, every_output: bool) -> nn.Module:
    """Stage2 weights from the dead input channel set to 100 × the layer's largest |weight|: on output
    channel OUTLIER_OUT only (per-channel scales contain it), or on every output channel (nothing does)."""
    broken = copy.deepcopy(model)
    conv = _conv(broken, 2)
    with torch.no_grad():
        big = 100 * float(conv.weight.abs().max())
        rows = slice(None) if every_output else slice(OUTLIER_OUT, OUTLIER_OUT + 1)
        conv.weight[rows, DEAD] = big
    return broken


def _export(model, data, out, budget):
    return export_model(model, SPEC, data, out, budget=budget, latency=FAST)


def test_the_outlier_leaves_fp32_exactly_unchanged(data, normal):
    x, _ = load_images(data.test, range(64))
    reference = run_torch(normal, x)
    for every in (False, True):
        assert np.array_equal(run_torch(_with_outlier(normal, every), x), reference)


def test_a_normal_model_keeps_per_tensor_at_the_default_budget(tmp_path, data, normal):
    card = _export(normal, data, tmp_path, Int8Budget(**QUICK))
    q = card.data["quantization"]
    assert [a["per_channel"] for a in q["attempts"]] == [False]
    assert q["chosen"] == 0 and q["within_budget"] is True and q["per_channel"] is False
    assert q["attempts"][0]["selection_drop"] <= 1.0
    sel = card.data["accuracy"]["selection"]  # the judged drop is the card's selection drop, independently scored
    assert q["attempts"][0]["selection_drop"] == pytest.approx(100 * sel["int8_drop"], abs=1e-9)
    assert card.data["accuracy"]["fp32"]["top1"] > 0.5  # trained: a drop would show
    assert q["verdict"].startswith("int8 within budget") and card.data["schema_version"] == 3


def test_per_tensor_misses_and_per_channel_meets(tmp_path, data, normal):
    card = _export(_with_outlier(normal, every_output=False), data, tmp_path, Int8Budget(**QUICK))
    q = card.data["quantization"]
    first, second = q["attempts"]
    assert (first["per_channel"], second["per_channel"]) == (False, True)
    assert first["met"] is False and first["selection_drop"] > 20  # every other stage2 weight rounds to 0
    assert second["met"] is True and q["chosen"] == 1 and q["per_channel"] is True and q["method"] == "minmax"
    assert card.data["accuracy"]["selection"]["int8"]["top1"] >= card.data["accuracy"]["selection"]["fp32"][
        "top1"] - 0.01
    assert "attempt 2 of 2" in q["verdict"] and "per-channel" in q["verdict"]
    validate_card(load_card(tmp_path).data)


def test_nothing_meets_the_budget_the_card_says_so_and_keeps_the_smallest_drop(tmp_path, data, normal, capsys):
    card = _export(_with_outlier(normal, every_output=True), data, tmp_path, Int8Budget(**QUICK))
    assert capsys.readouterr().out == ""  # onnxruntime's Entropy/Percentile calibrators print; the library must not
    q = card.data["quantization"]
    tried = [(a["per_channel"], a["method"], a["calibration_images"]) for a in q["attempts"]]
    assert tried == [(False, "minmax", 16), (True, "minmax", 16), (True, "minmax", 32), (True, "entropy", 32),
                     (True, "percentile", 32)]
    assert not any(a["met"] for a in q["attempts"]) and q["within_budget"] is False
    drops = [a["selection_drop"] for a in q["attempts"]]
    assert q["chosen"] == drops.index(min(drops))
    assert q["verdict"].startswith("int8 OVER budget") and q["verdict"] in card.data["notes"][0]
    assert (tmp_path / "model_int8.onnx").is_file() and not list(tmp_path.glob("*.attempt*"))


def test_ladder_order_caps_and_per_channel_first():
    assert Int8Budget(calibration_images=256).ladder(10_000) == [
        QuantizeOptions(False, 256), QuantizeOptions(True, 256), QuantizeOptions(True, 1024),
        QuantizeOptions(True, 1024, method="entropy"), QuantizeOptions(True, 1024, method="percentile")]
    capped = Int8Budget(calibration_images=50, per_channel_first=True).ladder(5)  # 4× of 5 is still 5
    assert capped == [QuantizeOptions(True, 5), QuantizeOptions(True, 5, method="entropy"),
                      QuantizeOptions(True, 5, method="percentile")]


def test_judge_drop_in_points_of_top1_or_balanced_accuracy():
    labels = np.array([0, 0, 0, 0, 1])
    eye = np.eye(2, dtype=np.float32)
    fp32 = eye[[0, 0, 0, 0, 1]]  # all right
    int8 = eye[[0, 0, 0, 0, 0]]  # the one class-1 image wrong: top-1 −20 points, balanced accuracy −50
    judge = Int8Judge(np.zeros((5, 1)), labels, fp32, ["a", "b"])
    judge_bacc = dataclasses.replace(judge, metric="bacc")
    for j, expected in ((judge, 20.0), (judge_bacc, 50.0)):
        assert 100 * (j.value(fp32) - j.value(int8)) == pytest.approx(expected)


def test_bad_budgets_are_export_errors():
    for kwargs, pattern in (({"points": -1}, "0 points or more"), ({"points": math.nan}, "0 points or more"),
                            ({"metric": "f1"}, "top1, bacc"), ({"calibration_images": 0}, "at least 1")):
        with pytest.raises(ExportError, match=pattern):
            Int8Budget(**kwargs)
    with pytest.raises(ExportError, match="minmax, entropy, percentile"):
        QuantizeOptions(method="distribution")

