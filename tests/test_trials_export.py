"""trials.export: one model → verified ONNX fp32 + int8 and a model card; failures leave nothing behind."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from search_space import resolve_arch
from search_space.model import build_model, reparameterize
from trials import export as export_mod
from trials.errors import ExportError
from trials.export import (
    CARD_FIELDS,
    CARD_NAME,
    FP32_NAME,
    INT8_NAME,
    export_model,
    load_card,
    sha256_file,
    validate_card,
)

SPEC = "qarepvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32_c10"
FAST = {"warmup": 1, "runs": 3, "sessions": 1}


@pytest.fixture(scope="module")
def data():
    from trials.data import load_data

    return load_data(None, 32)


@pytest.fixture(scope="module")
def model(randomize_bn):
    torch.manual_seed(0)
    return randomize_bn(build_model(resolve_arch(SPEC))).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data, model):
    out = tmp_path_factory.mktemp("export")
    card = export_model(model, resolve_arch(SPEC), data.train_eval, data.val, data.classes, out,
                        calibration_images=64, latency_protocol=FAST, predicted=[{"device": "X", "ms": 1.0}])
    return card, out


def _logits(path: Path, images: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: images[i:i + 1]})[0] for i in range(len(images))])


def _val(data) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[data.val[i] for i in range(len(data.val))])
    return torch.stack(xs).numpy(), np.asarray(ys)


def test_export_writes_verified_files_and_a_valid_card(exported, data, model):
    card, out = exported
    assert sorted(p.name for p in out.iterdir()) == sorted([CARD_NAME, FP32_NAME, INT8_NAME])
    validate_card(json.loads((out / CARD_NAME).read_text()))
    d = card.data
    for key in ("fp32", "int8"):
        assert d["files"][key]["sha256"] == sha256_file(out / d["files"][key]["path"])
    # the fp32 graph is the fused deploy form with a static input
    graph = onnx.load(str(out / FP32_NAME))
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("Conv") == resolve_arch(SPEC).num_layers and "BatchNormalization" not in ops
    assert d["onnx"]["input_shape"] == [1, 3, 32, 32] and d["onnx"]["opset"] >= 13
    # int8 is QDQ
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out / INT8_NAME)).graph.node)
    # the card's parity figure is what an independent comparison finds, and within tolerance
    x, y = _val(data)
    with torch.no_grad():
        ref = reparameterize(model)(torch.from_numpy(x)).numpy()
    fp32 = _logits(out / FP32_NAME, x)
    diff = float(np.abs(fp32 - ref).max())
    assert diff <= d["parity"]["tolerance"] and d["parity"]["passed"]
    assert d["parity"]["max_abs_diff"] == pytest.approx(diff, rel=1e-3, abs=1e-7)
    # the accuracy figures match predictions recomputed from the files
    int8 = _logits(out / INT8_NAME, x)
    assert d["accuracy"]["val_images"] == len(y)
    assert d["accuracy"]["fp32"]["top1"] == pytest.approx(float((fp32.argmax(1) == y).mean()))
    assert d["accuracy"]["int8"]["top1"] == pytest.approx(float((int8.argmax(1) == y).mean()))
    assert d["accuracy"]["int8_agreement"] == pytest.approx(float((int8.argmax(1) == fp32.argmax(1)).mean()))
    assert d["accuracy"]["int8_drop"] == pytest.approx(d["accuracy"]["fp32"]["top1"] - d["accuracy"]["int8"]["top1"])
    assert d["latency"]["measured"]["fp32"]["ms"] > 0 and d["latency"]["measured"]["int8"]["ms"] > 0
    assert d["latency"]["predicted"] == [{"device": "X", "ms": 1.0}]
    assert d["quantization"]["calibration_images"] == 64
    assert load_card(out).data == d


def _weight_scale_sizes(path: Path) -> list[int]:
    graph = onnx.load(str(path)).graph
    inits = {i.name: i for i in graph.initializer}
    return [onnx.numpy_helper.to_array(inits[n.input[1]]).size for n in graph.node
            if n.op_type == "DequantizeLinear" and n.input[0].endswith(".weight_quantized")]


def test_per_channel_gives_one_weight_scale_per_output_channel(tmp_path, exported, data, model):
    _, per_tensor = exported
    card = export_model(model, resolve_arch(SPEC), data.train_eval, data.val, data.classes, tmp_path,
                        per_channel=True, calibration_images=16, latency_protocol=FAST)
    assert card.data["quantization"]["per_channel"] is True
    sizes = _weight_scale_sizes(tmp_path / INT8_NAME)
    assert len(sizes) == resolve_arch(SPEC).num_layers + 1  # every conv and the head
    assert max(sizes) > 1  # conv weights carry a scale vector …
    assert set(_weight_scale_sizes(per_tensor / INT8_NAME)) == {1}  # … per-tensor ones a single scale


def test_failed_parity_leaves_the_previous_export_intact(tmp_path, exported, data, model, monkeypatch):
    _, good = exported
    before = {p.name: sha256_file(p) for p in good.iterdir()}
    real = export_mod.onnx_export.export_onnx

    def wrong(deploy, path, resolution, opset=17):  # an exporter that changes the model
        broken = reparameterize(deploy)
        with torch.no_grad():
            broken.head.bias.add_(1.0)
        return real(broken, path, resolution, opset=opset)

    monkeypatch.setattr(export_mod.onnx_export, "export_onnx", wrong)
    with pytest.raises(ExportError, match="parity check failed"):
        export_model(model, resolve_arch(SPEC), data.train_eval, data.val, data.classes, good,
                     calibration_images=8, latency_protocol=FAST)
    assert {p.name: sha256_file(p) for p in good.iterdir()} == before  # no staging folder, nothing replaced
    fresh = tmp_path / "fresh"
    with pytest.raises(ExportError):
        export_model(model, resolve_arch(SPEC), data.train_eval, data.val, data.classes, fresh,
                     calibration_images=8, latency_protocol=FAST)
    assert list(fresh.iterdir()) == []


def test_unwritable_output_and_bad_arguments_raise_export_error(tmp_path, data, model):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="cannot write to output folder"):
        export_model(model, resolve_arch(SPEC), data.train_eval, data.val, data.classes, blocker / "out")
    with pytest.raises(ExportError, match="classes"):
        export_model(model, resolve_arch(SPEC), data.train_eval, data.val, data.classes[:5], tmp_path / "a")
    with pytest.raises(ExportError, match="calibration"):
        export_model(model, resolve_arch(SPEC), data.train_eval, data.val, data.classes, tmp_path / "b",
                     calibration_images=0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_validate_card_names_every_problem(exported):
    card, _ = exported
    good = card.to_dict()
    validate_card(good)
    bad = card.to_dict()
    del bad["parity"]["max_abs_diff"]
    bad["accuracy"]["int8"]["top1"] = "high"
    bad["quantization"]["per_channel"] = 1
    with pytest.raises(ExportError) as info:
        validate_card(bad)
    text = str(info.value)
    assert "parity.max_abs_diff" in text and "accuracy.int8.top1" in text and "quantization.per_channel" in text
    other = card.to_dict()
    other["spec"] = other["spec"].replace("qarepvgg", "repvgg")
    with pytest.raises(ExportError, match="spec and arch disagree"):
        validate_card(other)


def test_every_card_field_is_documented(repo_root):
    doc = (repo_root / "docs" / "model_card.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z0-9_.]+)` \|", doc, flags=re.MULTILINE))
    assert set(CARD_FIELDS) <= documented, sorted(set(CARD_FIELDS) - documented)
