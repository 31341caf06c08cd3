"""ONNX export (fp32, deploy form) and int8 QDQ quantization: numerics, graph content, errors, atomicity."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from search_space import ArchSpec
from search_space.model import build_model, reparameterize
from trials.errors import ExportError
from trials.onnx_export import DEPLOY_OPS, export_onnx, quantize_int8, timing_model

SPEC = ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), resolution=32, num_classes=10)


def _trained_like_deploy(spec: ArchSpec, seed: int = 0) -> torch.nn.Module:
    """A train-form model with non-trivial BN statistics, fused to its deploy form."""
    torch.manual_seed(seed)
    model = build_model(spec)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return reparameterize(model)


def _run(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(deploy model, fp32 path, inputs) of a model fused from a train form with non-trivial BN."""
    folder = tmp_path_factory.mktemp("onnx")
    model = _trained_like_deploy(SPEC)
    fp32 = export_onnx(model, folder / "m.onnx", SPEC.resolution)
    x = np.random.default_rng(0).standard_normal((24, 3, 32, 32)).astype(np.float32)
    return model, fp32, x


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """(fp32 path, int8 path, inputs): He-initialised deploy model (logits vary with the input, unlike a
    default-initialised one whose biases fix the argmax), int8 calibrated on the same inputs."""
    folder = tmp_path_factory.mktemp("int8")
    fp32 = export_onnx(timing_model(SPEC, seed=1), folder / "m.onnx", SPEC.resolution)
    x = np.random.default_rng(1).standard_normal((32, 3, 32, 32)).astype(np.float32)
    return fp32, quantize_int8(fp32, folder / "m.int8.onnx", list(x)), x


def test_fp32_matches_pytorch(exported):
    model, fp32, x = exported
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(fp32, x), expected, atol=1e-4, rtol=1e-4)


def test_fp32_graph_is_plain_deploy_form(exported):
    model, fp32, _ = exported
    graph = onnx.load(str(fp32))
    onnx.checker.check_model(graph, full_check=True)
    ops = Counter(n.op_type for n in graph.graph.node)
    assert set(ops) <= DEPLOY_OPS
    assert ops["Conv"] == SPEC.num_layers and ops["Gemm"] == 1
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 32, 32]
    assert not model.training  # export restores the mode it found


def test_equal_biases_do_not_leave_identity_nodes(tmp_path):
    model = build_model(SPEC, deploy=True).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.zeros_(m.bias)  # the exporter aliases equal constants with Identity nodes
    graph = onnx.load(str(export_onnx(model, tmp_path / "z.onnx", 32)))
    assert {n.op_type for n in graph.graph.node} <= DEPLOY_OPS


def test_int8_is_qdq_and_agrees_with_fp32(quantized):
    fp32, int8, x = quantized
    ops = Counter(n.op_type for n in onnx.load(str(int8)).graph.node)
    assert ops["QuantizeLinear"] >= SPEC.num_layers and ops["DequantizeLinear"] >= SPEC.num_layers
    ref, quant = _run(fp32, x), _run(int8, x)
    assert quant.shape == ref.shape == (len(x), SPEC.num_classes)
    assert np.isfinite(quant).all()
    assert len(set(ref.argmax(1))) >= 3  # the comparison below is not trivially true
    agree = np.mean(ref.argmax(1) == quant.argmax(1))
    assert agree >= 0.8, agree
    # quantization error is small against the logits' spread
    assert np.abs(quant - ref).mean() < 0.2 * ref.std()


def test_training_form_is_refused(tmp_path):
    with pytest.raises(ExportError, match="re-parameterize"):
        export_onnx(build_model(SPEC), tmp_path / "t.onnx", 32)
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_is_an_export_error(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        export_onnx(build_model(SPEC, deploy=True), tmp_path / "no" / "m.onnx", 32)


def test_quantize_errors_leave_no_file(exported, tmp_path):
    _, fp32, _ = exported
    with pytest.raises(ExportError, match="no calibration"):
        quantize_int8(fp32, tmp_path / "a.onnx", [])
    with pytest.raises(ExportError, match="quantization failed"):
        quantize_int8(fp32, tmp_path / "b.onnx", [np.zeros((1, 3, 16, 16), np.float32)])
    with pytest.raises(ExportError, match="not found"):
        quantize_int8(tmp_path / "none.onnx", tmp_path / "c.onnx", [np.zeros((1, 3, 32, 32), np.float32)])
    assert list(tmp_path.iterdir()) == []


def test_quantize_splits_batches_to_the_static_batch(exported, tmp_path):
    _, fp32, x = exported
    out = quantize_int8(fp32, tmp_path / "q.onnx", [x[:4], x[4]], per_channel=True, reduce_range=False,
                        preprocess=True)
    assert np.isfinite(_run(out, x[:2])).all()
