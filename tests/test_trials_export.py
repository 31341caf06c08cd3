"""trials.export: one model → verified ONNX fp32 + int8 and a model card; failures leave nothing behind.

The stages of :mod:`trials.export_stages` are also checked one by one, each against an independent count.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import stat
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from search_space import resolve_arch
from search_space.io import atomic_write
from search_space.model import build_model, reparameterize
from trials import export as export_mod
from trials.errors import ExportError
from trials.export import FP32_NAME, INT8_NAME, Provenance, export_model
from trials.export_stages import (
    PARITY_RTOL,
    LatencyOptions,
    check_fidelity,
    check_parity,
    inspect_graph,
    measure_latency,
    run_torch,
)
from trials.int8_stage import Int8Budget, QuantizeOptions, quantize
from trials.model_card import (
    CARD_FIELDS,
    CARD_FIELDS_V1,
    CARD_FIELDS_V2,
    CARD_NAME,
    load_card,
    sha256_file,
    validate_card,
)

SPEC = "qarepvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32_c10"
FAST = LatencyOptions(warmup=1, runs=3, sessions=1)


@pytest.fixture(scope="module")
def data():
    """The digits with a test split twice the selection split's size (34 vs 17 per class): the two cannot be
    mistaken for each other."""
    from trials.data import load_data

    return load_data(None, 32, test_ratio=0.2)


@pytest.fixture(scope="module")
def model(randomize_bn):
    torch.manual_seed(0)
    return randomize_bn(build_model(resolve_arch(SPEC))).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data, model):
    """(card, folder, attached bytes): an export with a checkpoint-like file attached, made by atomic_write."""
    out = tmp_path_factory.mktemp("export")
    extra = tmp_path_factory.mktemp("extra") / "weights.pt"
    with atomic_write(extra, "wb") as handle:
        handle.write(b"not really a checkpoint")
    card = export_model(model, resolve_arch(SPEC), data, out, budget=Int8Budget(math.inf, calibration_images=64),
                        latency=FAST, predicted=[{"device": "X", "ms": 1.0}], attach={"checkpoint": extra},
                        provenance=Provenance(source={"kind": "test"}, notes=["given note"]))
    return card, out, b"not really a checkpoint"


def _logits(path: Path, images: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: images[i:i + 1]})[0] for i in range(len(images))])


def _split(data, name: str = "test") -> tuple[np.ndarray, np.ndarray]:
    dataset = getattr(data, name)
    xs, ys = zip(*[dataset[i] for i in range(len(dataset))])
    return torch.stack(xs).numpy(), np.asarray(ys)


def _recalls(logits: np.ndarray, y: np.ndarray, k: int) -> list[float]:
    """Per-class recall by a plain loop over the classes."""
    pred = logits.argmax(1)
    return [float(np.mean(pred[y == c] == c)) for c in range(k)]


def test_export_writes_verified_files_and_a_valid_card(exported, data, model):
    card, out, _ = exported
    assert sorted(p.name for p in out.iterdir()) == sorted([CARD_NAME, FP32_NAME, INT8_NAME, "checkpoint.pt"])
    validate_card(json.loads((out / CARD_NAME).read_text()))
    d = card.data
    for key in ("fp32", "int8", "checkpoint"):
        assert d["files"][key]["sha256"] == sha256_file(out / d["files"][key]["path"])
    # the fp32 graph is the fused deploy form with a static input
    graph = onnx.load(str(out / FP32_NAME))
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("Conv") == resolve_arch(SPEC).num_layers and "BatchNormalization" not in ops
    assert d["onnx"]["input_shape"] == [1, 3, 32, 32] and d["onnx"]["opset"] >= 13
    # int8 is QDQ
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out / INT8_NAME)).graph.node)
    # the card's parity figure is what an independent comparison finds on the test images, within tolerance
    x, y = _split(data, "test")
    with torch.no_grad():
        ref = reparameterize(model)(torch.from_numpy(x)).numpy()
    fp32 = _logits(out / FP32_NAME, x)
    diff = float(np.abs(fp32 - ref).max())
    assert diff <= d["parity"]["tolerance"] and d["parity"]["passed"]
    assert d["parity"]["max_abs_diff"] == pytest.approx(diff, rel=1e-3, abs=1e-7)
    # the accuracy is the test split's: figures recomputed from the files on the test images
    int8 = _logits(out / INT8_NAME, x)
    acc = d["accuracy"]
    assert acc["split"] == "test" and acc["images"] == len(y) == len(data.test) == d["parity"]["images"]
    assert acc["fp32"]["top1"] == pytest.approx(float((fp32.argmax(1) == y).mean()))
    assert acc["int8"]["top1"] == pytest.approx(float((int8.argmax(1) == y).mean()))
    assert acc["int8_agreement"] == pytest.approx(float((int8.argmax(1) == fp32.argmax(1)).mean()))
    assert acc["int8_drop"] == pytest.approx(acc["fp32"]["top1"] - acc["int8"]["top1"])
    k = len(data.classes)
    for form, logits in (("fp32", fp32), ("int8", int8)):
        recalls = _recalls(logits, y, k)
        assert acc[form]["balanced_acc"] == pytest.approx(np.mean(recalls))
        assert acc[form]["worst_class_recall"] == pytest.approx(min(recalls))
        assert {r["class"]: r[f"{form}_recall"] for r in acc["per_class"]} == pytest.approx(dict(enumerate(recalls)))
    assert [r["images"] for r in sorted(acc["per_class"], key=lambda r: r["class"])] == data.test_counts
    assert [r["fp32_recall"] for r in acc["per_class"]] == sorted(r["fp32_recall"] for r in acc["per_class"])
    # beside it, the selection split's figures, from the selection images
    sx, sy = _split(data, "selection")
    sel_fp32 = _logits(out / FP32_NAME, sx)
    assert acc["selection"]["images"] == len(data.selection) and "per_class" not in acc["selection"]
    assert acc["selection"]["fp32"]["top1"] == pytest.approx(float((sel_fp32.argmax(1) == sy).mean()))
    assert acc["selection"]["fp32"]["balanced_acc"] == pytest.approx(np.mean(_recalls(sel_fp32, sy, k)))
    assert d["latency"]["measured"]["fp32"]["ms"] > 0 and d["latency"]["measured"]["int8"]["ms"] > 0
    assert d["latency"]["predicted"] == [{"device": "X", "ms": 1.0}]
    assert d["quantization"]["calibration_images"] == 64
    assert d["source"] == {"kind": "test"} and d["notes"][0] == "given note" and d["training"] is None
    assert load_card(out).data == d


def test_exported_files_have_the_mode_of_a_plain_new_file(exported, tmp_path):
    """Staged files are born in a 0700 folder from mkstemp (0600); they must end up like any new file."""
    _, out, attached = exported
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    expected = stat.S_IMODE(plain.stat().st_mode)
    if expected == 0o600:
        pytest.skip("under umask 077 a plain file is 0600 too: nothing to tell apart")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == dict.fromkeys([CARD_NAME, FP32_NAME, INT8_NAME, "checkpoint.pt"], expected)
    assert (out / "checkpoint.pt").read_bytes() == attached


def _weight_scale_sizes(path: Path) -> list[int]:
    graph = onnx.load(str(path)).graph
    inits = {i.name: i for i in graph.initializer}
    return [onnx.numpy_helper.to_array(inits[n.input[1]]).size for n in graph.node
            if n.op_type == "DequantizeLinear" and n.input[0].endswith(".weight_quantized")]


def test_per_channel_gives_one_weight_scale_per_output_channel(tmp_path, exported, data, model):
    _, per_tensor, _ = exported
    card = export_model(model, resolve_arch(SPEC), data, tmp_path, latency=FAST,
                        budget=Int8Budget(math.inf, per_channel_first=True, calibration_images=16))
    assert card.data["quantization"]["per_channel"] is True
    assert [a["per_channel"] for a in card.data["quantization"]["attempts"]] == [True]
    sizes = _weight_scale_sizes(tmp_path / INT8_NAME)
    assert len(sizes) == resolve_arch(SPEC).num_layers + 1  # every conv and the head
    assert max(sizes) > 1  # conv weights carry a scale vector …
    assert set(_weight_scale_sizes(per_tensor / INT8_NAME)) == {1}  # … per-tensor ones a single scale


def test_failed_parity_leaves_the_previous_export_intact(tmp_path, exported, data, model, monkeypatch):
    _, good, _ = exported
    before = {p.name: sha256_file(p) for p in good.iterdir()}
    real = export_mod.onnx_export.export_onnx

    def wrong(deploy, path, resolution, opset=17):  # an exporter that changes the model
        broken = reparameterize(deploy)
        with torch.no_grad():
            broken.head.bias.add_(1.0)
        return real(broken, path, resolution, opset=opset)

    monkeypatch.setattr(export_mod.onnx_export, "export_onnx", wrong)
    quick = Int8Budget(calibration_images=8)
    with pytest.raises(ExportError, match="parity check failed"):
        export_model(model, resolve_arch(SPEC), data, good, budget=quick, latency=FAST)
    assert {p.name: sha256_file(p) for p in good.iterdir()} == before  # no staging folder, nothing replaced
    fresh = tmp_path / "fresh"
    with pytest.raises(ExportError):
        export_model(model, resolve_arch(SPEC), data, fresh, budget=quick, latency=FAST)
    assert list(fresh.iterdir()) == []


def test_unwritable_output_and_bad_arguments_raise_export_error(tmp_path, data, model):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="cannot write to output folder"):
        export_model(model, resolve_arch(SPEC), data, blocker / "out")
    with pytest.raises(ExportError, match="classes"):
        export_model(model, resolve_arch(SPEC), dataclasses.replace(data, classes=data.classes[:5]), tmp_path / "a")
    with pytest.raises(ExportError, match="the spec wants"):
        export_model(model, resolve_arch(SPEC).replace(resolution=48), data, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ExportError, match="calibration"):
        QuantizeOptions(calibration_images=0)
    with pytest.raises(ExportError, match="onnxruntime threads"):
        LatencyOptions(ort_threads=0)
    with pytest.raises(ExportError, match="runs=0"):
        LatencyOptions(runs=0)


# -- the stages, one by one ------------------------------------------------------------------------------


def test_parity_fails_when_a_deploy_weight_moves_beyond_tolerance(data, model):
    """Shifting the head bias of one class by δ moves that logit by exactly δ on every image."""
    x, _ = _split(data, "test")
    deploy = reparameterize(model)
    ref = run_torch(deploy, x)
    train = run_torch(model, x[:64])
    tolerance = PARITY_RTOL * max(1.0, float(np.abs(ref).max()))
    for delta, passes in ((0.5 * tolerance, True), (3.0 * tolerance, False)):
        moved = reparameterize(deploy)
        with torch.no_grad():
            moved.head.bias[3] += delta
        section = check_parity(ref, run_torch(moved, x), train)
        assert section.tolerance == pytest.approx(tolerance)
        assert section.max_abs_diff == pytest.approx(delta, rel=1e-2)
        assert section.passed is passes and section.to_dict()["passed"] is passes
        if not passes:
            with pytest.raises(ExportError, match="parity check failed: the fp32 ONNX"):
                section.require()
    # the train-form comparison counts too, with its own message
    bad_train = check_parity(ref, ref, train + 3.0 * tolerance)
    assert bad_train.max_abs_diff == 0 and not bad_train.passed
    with pytest.raises(ExportError, match="re-parameterized model"):
        bad_train.require()
    assert not check_parity(ref, np.full_like(ref, np.nan), train).passed  # NaN never passes


def test_fidelity_agreement_and_scores_match_independent_counts():
    rng = np.random.default_rng(4)
    n, k = 200, 7
    labels = rng.integers(0, k, n)
    fp32 = rng.standard_normal((n, k))
    int8 = fp32.copy()
    flipped = rng.choice(n, 23, replace=False)  # move the argmax of exactly 23 images elsewhere
    for i in flipped:
        other = (fp32[i].argmax() + 1 + rng.integers(0, k - 1)) % k
        int8[i, other] = fp32[i].max() + 1.0
    classes = [f"c{c}" for c in range(k)]
    section = check_fidelity("test", labels, classes, pytorch=fp32, fp32=fp32, int8=int8)
    assert section.int8_agreement == pytest.approx(1 - 23 / n)

    def brute(logits):  # a plain loop: top-1, mean recall over the classes present, lowest recall
        hits = [int(np.argmax(row) == y) for row, y in zip(logits, labels, strict=True)]
        recalls = [np.mean([h for h, y in zip(hits, labels, strict=True) if y == c]) for c in set(labels.tolist())]
        return sum(hits) / n, float(np.mean(recalls)), float(min(recalls))

    for got, logits in ((section.fp32, fp32), (section.int8, int8), (section.pytorch, fp32)):
        assert (got.top1, got.balanced_acc, got.worst_class_recall) == pytest.approx(brute(logits))
    d = section.to_dict()
    assert d["int8_drop"] == pytest.approx(brute(fp32)[0] - brute(int8)[0]) and d["images"] == n
    assert sum(r["int8_correct"] for r in d["per_class"]) == round(brute(int8)[0] * n)
    notes = section.notes("repvgg")
    assert any("disagree on 11.5 % of test images" in s for s in notes)  # 23 / 200
    assert check_fidelity("test", labels, classes, pytorch=fp32, fp32=fp32, int8=fp32).notes("repvgg") == []


def test_quantize_records_the_sample_it_calibrated_on(tmp_path, exported, data):
    _, out, _ = exported
    spec = resolve_arch(SPEC)
    graph = inspect_graph(out / FP32_NAME, spec)
    assert (graph.conv_nodes, graph.input_shape) == (spec.num_layers, [1, 3, 32, 32])
    with pytest.raises(ExportError, match="not the deploy form"):
        inspect_graph(out / FP32_NAME, spec.replace(depths=(1, 1, 2, 1)))
    small = torch.utils.data.Subset(data.train_eval, range(5))
    qdq = quantize(out / FP32_NAME, tmp_path / "q.onnx", small, QuantizeOptions(calibration_images=50))
    nodes = [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node]
    assert qdq == nodes.count("QuantizeLinear") + nodes.count("DequantizeLinear") > 0


def test_measure_latency_uses_the_onnxruntime_threads_it_records(exported):
    _, out, _ = exported
    section = measure_latency(out / FP32_NAME, out / INT8_NAME, dataclasses.replace(FAST, ort_threads=2),
                              predicted=[{"device": "Y"}])
    d = section.to_dict()
    assert d["measured"]["threads"] == 2
    assert d["measured"]["fp32"]["threads"] == d["measured"]["int8"]["threads"] == 2  # what the timer ran with
    assert d["measured"]["int8"]["runs"] == 3 and d["predicted"] == [{"device": "Y"}]


def test_validate_card_names_every_problem(exported):
    card, _, _ = exported
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


def _as_schema_1(card: dict) -> dict:
    """The card as schema 1 wrote it: one accuracy block (on the validation split), no test fields."""
    acc = card["accuracy"]["selection"]
    old = {**card, "schema_version": 1, "data": {"source": "embedded:sklearn-digits", "resolution": 32}}
    old["accuracy"] = {"val_images": acc["images"], "int8_agreement": 0.99, "int8_drop": acc["int8_drop"],
                       **{form: {k: acc[form][k] for k in ("top1", "balanced_acc")} for form in ("fp32", "int8")},
                       "pytorch": {k: acc["fp32"][k] for k in ("top1", "balanced_acc")}}
    return old


def test_schema_1_cards_still_load_and_say_they_have_no_test_figures(exported, tmp_path):
    card, _, _ = exported
    old = _as_schema_1(card.to_dict())
    validate_card(old)
    (tmp_path / CARD_NAME).write_text(json.dumps(old))
    summary = load_card(tmp_path).summary()
    assert summary["selection_fp32_top1"] == old["accuracy"]["fp32"]["top1"]
    assert summary["test_fp32_top1"] is None and summary["test_images"] is None
    with pytest.raises(ExportError, match=r"missing accuracy\.split"):  # a current card must have the test block
        validate_card({**old, "schema_version": 2})
    with pytest.raises(ExportError, match="schema_version 9"):
        validate_card({**old, "schema_version": 9})
    v2 = card.to_dict()  # schema 2: no int8 budget in the quantization section
    v2["schema_version"] = 2
    for key in ("method", "budget", "attempts", "chosen", "within_budget", "verdict"):
        del v2["quantization"][key]
    validate_card(v2)
    assert load_card_dict(tmp_path, v2).summary()["int8_within_budget"] is None
    with pytest.raises(ExportError, match=r"missing quantization\.verdict"):
        validate_card({**v2, "schema_version": 3})
    new = card.summary()
    assert new["test_fp32_top1"] == card.data["accuracy"]["fp32"]["top1"] and new["test_images"] == len(
        card.data["accuracy"]["per_class"]) * 34  # the digits at test ratio 0.2: floor(0.2 · 174) per class


def load_card_dict(folder: Path, card: dict):
    """Write ``card`` into ``folder`` and read it back with :func:`load_card`."""
    (folder / CARD_NAME).write_text(json.dumps(card))
    return load_card(folder)


def test_an_empty_test_split_is_one_clear_error(tmp_path, data, model):
    empty = dataclasses.replace(data, test=torch.utils.data.Subset(data.test, []))
    with pytest.raises(ExportError, match="the test split is empty"):
        export_model(model, resolve_arch(SPEC), empty, tmp_path / "x", latency=FAST)
    assert not (tmp_path / "x").exists() or not list((tmp_path / "x").iterdir())


def test_every_card_field_is_documented(repo_root):
    doc = (repo_root / "docs" / "model_card.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z0-9_.]+)` \|", doc, flags=re.MULTILINE))
    every = set(CARD_FIELDS) | set(CARD_FIELDS_V1) | set(CARD_FIELDS_V2)
    assert every <= documented, sorted(every - documented)
