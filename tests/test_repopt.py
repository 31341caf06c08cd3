"""RepOpt-VGG (issue 14): the gradient-mask equivalence, scales files, the block in spec/cost/presets, budgets,
exact resume, and the plain model through nas train, nas export and nas search."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from nas.cli import main
from search_space import ArchSpec, analyze, get_preset, parse_arch, preset_name
from search_space.model import build_model, reparameterize
from trials.checkpoint import Checkpoint
from trials.config import TrainConfig
from trials.data import load_data
from trials.errors import TrainError
from trials.proxy import ProxyBudget, ProxyConfig, proxy_accuracy
from trials.repopt import (
    HS_SHARE,
    HyperSearchBlock,
    RepOptAdamW,
    RepOptSGD,
    Scales,
    blocks_of,
    build_hs_model,
    grad_masks,
    hs_config,
    init_from_scales,
    within_budget,
)
from trials.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: stage0 3→8 stride 2; stage1: 8→8 stride 2 (no identity), 8→8 stride 1 (identity); stages 2-4 strided.
SMALL = ArchSpec((2, 1, 1, 1), (0.125, 0.125, 0.125, 0.0625), "repopt", 1, 32, 5)
#: groups 2: stage1.1 (layer 2, identity) is a grouped conv.
GROUPED = ArchSpec((2, 1, 1, 1), (0.125, 0.125, 0.125, 0.0625), "repopt", 2, 32, 5)
TINY = ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), "repopt", 1, 32, 10)


# -- the heart: k masked SGD steps of the plain conv == k SGD steps of the multi-branch block ------------------

def _random_scales(model: nn.Module, seed: int) -> None:
    """Fixed s₃, s₁ (frozen, spread around the official initial values) and a random trainable identity d."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, b in blocks_of(model):
            assert isinstance(b, HyperSearchBlock)
            b.scale_conv.copy_(torch.rand(b.cout, generator=gen, dtype=torch.float64) + 0.5)
            b.scale_one_by_one.copy_(torch.rand(b.cout, generator=gen, dtype=torch.float64) * 1.5)
            b.scale_conv.requires_grad_(False)
            b.scale_one_by_one.requires_grad_(False)
            if b.scale_identity is not None:
                b.scale_identity.copy_(torch.rand(b.cout, generator=gen, dtype=torch.float64) + 0.5)


def _twins(spec: ArchSpec, seed: int) -> tuple[nn.Module, nn.Module, Scales]:
    """The multi-branch model (frozen s₃, s₁; trainable identity) and the plain model holding its merged
    kernels, BN and head, in float64, and the scales the masks come from."""
    torch.manual_seed(seed)
    multi = build_hs_model(spec).double()
    _random_scales(multi, seed)
    plain = build_model(spec).double()
    with torch.no_grad():
        for (_, hs), (_, pb) in zip(blocks_of(multi), blocks_of(plain)):
            pb.dense.conv.weight.copy_(hs.merged_kernel())
            pb.dense.bn.load_state_dict(hs.bn.state_dict())
        plain.head.load_state_dict(multi.head.state_dict())
    return multi, plain, Scales.from_model(multi, spec, {"kind": "test"})


def _train_both(spec: ArchSpec, steps: int, power: int = 2, identity: bool = True, nesterov: bool = False,
                seed: int = 0) -> tuple[nn.Module, nn.Module]:
    multi, plain, scales = _twins(spec, seed)
    masks = grad_masks(plain, scales, power=power)
    if not identity:  # a deliberately wrong mask: the identity diagonal's +1 left out
        masks = [(p, _without_identity(m, b)) for (p, m), (_, b) in zip(masks, blocks_of(plain))]
    kw = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01, "nesterov": nesterov}
    opt_multi = torch.optim.SGD([p for p in multi.parameters() if p.requires_grad], **kw)
    opt_plain = RepOptSGD(plain.parameters(), masks, **kw)
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        x = torch.randn(6, 3, spec.resolution, spec.resolution, generator=gen, dtype=torch.float64)
        y = torch.randint(0, spec.num_classes, (6,), generator=gen)
        for model, opt in ((multi, opt_multi), (plain, opt_plain)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return multi, plain


def _without_identity(mask: torch.Tensor, block: nn.Module) -> torch.Tensor:
    """``mask`` less 1 on the identity's diagonal centre (channel c reads input c of its group)."""
    out = mask.clone()
    if block.has_identity:
        per_group = mask.shape[1]
        for c in range(mask.shape[0]):
            out[c, c % per_group, 1, 1] -= 1.0
    return out


def _kernels(multi: nn.Module, plain: nn.Module) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    return [(name, hs.merged_kernel().detach(), pb.dense.conv.weight.detach())
            for (name, hs), (_, pb) in zip(blocks_of(multi), blocks_of(plain))]


@pytest.mark.parametrize("spec", [SMALL, GROUPED], ids=["g1", "g2"])
@pytest.mark.parametrize("nesterov", [False, True])
def test_masked_sgd_steps_equal_the_multi_branch_block(spec: ArchSpec, nesterov: bool) -> None:
    multi, plain = _train_both(spec, steps=4, nesterov=nesterov)
    kinds = {(hs.has_identity, hs.stride) for _, hs in blocks_of(multi)}
    assert (True, 1) in kinds and (False, 2) in kinds  # an identity block and a strided one without
    for name, merged, kernel in _kernels(multi, plain):
        torch.testing.assert_close(kernel, merged, msg=name)  # float64 defaults: rtol 1e-7, atol 1e-7
    torch.testing.assert_close(plain.head.weight, multi.head.weight)
    start = _twins(spec, 0)[1]  # the kernels moved: the check compares trained weights, not the start
    assert all(not torch.allclose(k, s.dense.conv.weight) for (_, _, k), (_, s) in
               zip(_kernels(multi, plain), blocks_of(start)))


@pytest.mark.parametrize(("power", "identity"), [(1, True), (2, False)], ids=["s-not-s2", "no-identity-1"])
def test_a_wrong_mask_breaks_the_equivalence(power: int, identity: bool) -> None:
    multi, plain = _train_both(SMALL, steps=4, power=power, identity=identity)
    pairs = _kernels(multi, plain)
    if not identity:  # only the identity blocks feel the missing +1
        pairs = [p for p, (_, b) in zip(pairs, blocks_of(multi)) if b.has_identity]
    assert pairs and all(not torch.allclose(k, m, rtol=1e-7, atol=1e-7) for _, m, k in pairs)


def test_masks_in_closed_form() -> None:
    spec = SMALL
    model = build_model(spec)
    hs = build_hs_model(spec)
    _random_scales(hs.double(), 3)
    scales = Scales.from_model(hs, spec, {})
    for (name, block), (weight, mask), s in zip(blocks_of(model), grad_masks(model, scales), scales.blocks):
        assert weight is block.dense.conv.weight
        c_out, c_in = weight.shape[:2]
        for o in range(c_out):
            for i in range(c_in):
                for u in range(3):
                    for v in range(3):
                        want = s.conv[o] ** 2
                        if (u, v) == (1, 1):
                            want += s.one_by_one[o] ** 2 + (1.0 if s.identity is not None and o == i else 0.0)
                        assert math.isclose(mask[o, i, u, v].item(), want, rel_tol=1e-6), (name, o, i, u, v)


def test_init_from_scales_is_the_merged_kernel() -> None:
    model = build_model(SMALL).double()
    hs = build_hs_model(SMALL).double()
    _random_scales(hs, 5)
    scales = Scales.from_model(hs, SMALL, {})
    before = [b.dense.conv.weight.detach().clone() for _, b in blocks_of(model)]
    torch.manual_seed(11)
    init_from_scales(model, scales)
    torch.manual_seed(11)  # the same draws: torch's default init of a fresh 1×1 conv, one per block
    for (_, b), w3, s in zip(blocks_of(model), before, scales.blocks):
        w1 = torch.empty(b.cout, b.cin, 1, 1, dtype=torch.float64)
        nn.init.kaiming_uniform_(w1, a=math.sqrt(5))
        expected = w3 * torch.tensor(s.conv, dtype=torch.float64).view(-1, 1, 1, 1)
        expected[:, :, 1, 1] += (w1 * torch.tensor(s.one_by_one, dtype=torch.float64).view(-1, 1, 1, 1))[:, :, 0, 0]
        if s.identity is not None:
            for c in range(b.cout):
                expected[c, c, 1, 1] += s.identity[c]
        torch.testing.assert_close(b.dense.conv.weight, expected)


def test_adamw_masks_the_gradient_before_its_step() -> None:
    torch.manual_seed(0)
    a, b = nn.Conv2d(4, 4, 3, bias=False), nn.Conv2d(4, 4, 3, bias=False)
    b.load_state_dict(a.state_dict())
    mask = torch.rand_like(a.weight) + 0.5
    opt_a = RepOptAdamW(a.parameters(), [(a.weight, mask)], lr=0.01, weight_decay=0.05)
    opt_b = torch.optim.AdamW(b.parameters(), lr=0.01, weight_decay=0.05)
    for _ in range(3):
        x = torch.randn(2, 4, 6, 6)
        for m, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            m(x).square().sum().backward()
        b.weight.grad.mul_(mask)  # by hand
        opt_a.step()
        opt_b.step()
    torch.testing.assert_close(a.weight, b.weight)


# -- scales files ------------------------------------------------------------------------------------------

def _scales(spec: ArchSpec = SMALL, seed: int = 1) -> Scales:
    hs = build_hs_model(spec).double()
    _random_scales(hs, seed)
    return Scales.from_model(hs, spec, {"kind": "search", "steps": 3})


def test_scales_file_round_trips_exactly_and_names_its_spec(tmp_path: Path) -> None:
    scales = _scales()
    path = scales.write(tmp_path / "s.json")
    body = json.loads(path.read_text())
    assert body["spec"] == SMALL.to_dict() and body["format"] == "repvgg-hwnas-repopt-scales"
    back = Scales.read(path, SMALL)
    assert back == scales and back.sha256 == scales.sha256 and back.source == str(path)
    assert back.describe()["found_by"] == {"kind": "search", "steps": 3}
    # other input size and head: the same per-channel scales apply
    Scales.read(path, SMALL.replace(resolution=64, num_classes=3))
    assert _scales(seed=2).sha256 != scales.sha256


def test_bad_scales_files_are_one_clear_error(tmp_path: Path) -> None:
    path = _scales().write(tmp_path / "s.json")
    with pytest.raises(TrainError, match="belong to"):
        Scales.read(path, SMALL.replace(widths=(0.25, 0.125, 0.125, 0.0625)))
    body = json.loads(path.read_text())
    body["blocks"][2]["conv"] = body["blocks"][2]["conv"][:-1]
    (tmp_path / "short.json").write_text(json.dumps(body))
    with pytest.raises(TrainError, match="do not fit"):
        Scales.read(tmp_path / "short.json")
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(TrainError, match="cannot read"):
        Scales.read(tmp_path / "junk.json")
    (tmp_path / "other.json").write_text('{"format": "x"}')
    with pytest.raises(TrainError, match="not a version-1"):
        Scales.read(tmp_path / "other.json")


def test_a_scales_file_for_another_block_is_refused(tmp_path: Path) -> None:
    path = _scales(TINY).write(tmp_path / "s.json")
    data = load_data(None, 32, max_per_class=20)
    cfg = TrainConfig(epochs=1, batch_size=32, device="cpu", recipe=data.recipe, scales=str(path))
    with pytest.raises(TrainError, match="repopt block"):
        train(TINY.replace(block="repvgg"), data, cfg)


# -- the block in spec, cost model and presets ----------------------------------------------------------------

def test_spec_string_round_trips_and_costs_are_repvggs_deploy_and_the_plain_train_form() -> None:
    text = "repopt_d1-2-3-1_w0.25-0.5-0.5-1_g2_r48_c7"
    spec = ArchSpec.parse(text)
    assert spec.block == "repopt" and spec.to_string() == text and ArchSpec.from_json(spec.to_json()) == spec
    rep, opt = analyze(spec.replace(block="repvgg")), analyze(spec)
    for key in ("macs", "params", "peak_memory_bytes", "peak_layer", "weight_bytes", "legacy_flops"):
        assert getattr(opt, key) == getattr(rep, key), key
    assert opt.train_params == sum(p.numel() for p in build_model(spec).parameters())  # second counter: torch
    assert opt.train_params < rep.train_params


def test_the_plain_model_re_parameterizes_exactly(randomize_bn) -> None:
    model = randomize_bn(build_model(SMALL), 0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(reparameterize(model)(x), model(x))


def test_repopt_presets_have_their_published_parameter_counts() -> None:
    # RepOpt-VGG deploys exactly as RepVGG: RepVGG-A0 8.30 M and RepVGG-B1 51.82 M params (ImageNet, 1000
    # classes, Ding et al. 2021, printed truncated; RepOpt-VGG-B1: 51.8 M, Ding et al. 2023); the seed's A0
    # row at 112 px, 89 classes: 7,142,393
    a0, b1 = parse_arch("RepOpt-A0-hs").resolve(), parse_arch("repopt-b1").resolve()
    assert a0.block == b1.block == "repopt"
    assert 8.30e6 <= analyze(a0).params < 8.31e6 and 51.82e6 <= analyze(b1).params < 51.83e6
    assert analyze(get_preset("RepOpt-A0-hs").spec(112, 89)).params == 7_142_393
    assert preset_name(a0) == "RepOpt-A0-hs" and preset_name(a0.replace(block="repvgg")) == "A0"
    assert parse_arch("RepOpt-B1").resolve(block="qarepvgg").block == "qarepvgg"


# -- budgets ---------------------------------------------------------------------------------------------------

def test_hyper_search_budget_is_a_fifth_of_the_run_or_as_given() -> None:
    cfg = TrainConfig(epochs=30, warmup_epochs=5, max_steps=1000)
    hs = hs_config(cfg)
    assert (hs.epochs, hs.max_steps, hs.warmup_epochs) == (6, 200, 1.0)
    assert (hs.recipe, hs.lr, hs.batch_size, hs.seed) == (cfg.recipe, cfg.lr, cfg.batch_size, cfg.seed)
    assert hs_config(TrainConfig(epochs=2)).epochs == 1 and hs_config(TrainConfig(epochs=2)).max_steps is None
    assert hs_config(cfg.replace(hs_steps=7)).max_steps == 7
    carved = within_budget(TrainConfig(max_steps=120), 102)
    assert carved.hs_steps == math.ceil(HS_SHARE * 102) and carved.hs_steps + carved.max_steps == 102


def test_the_proxy_of_a_repopt_spec_spends_the_same_steps_in_total() -> None:
    budget = ProxyConfig(budget=ProxyBudget(epochs=1, max_steps=10, train_images=200, selection_per_class=3))
    plain = proxy_accuracy(TINY.replace(block="repvgg"), config=budget)
    repopt = proxy_accuracy(TINY, config=budget)
    hs_steps = math.ceil(HS_SHARE * plain.steps)
    assert plain.steps == 6 and repopt.steps == plain.steps - hs_steps  # 200 images / 32: 6 steps in all


# -- training, resume, the command line ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return load_data(None, 32, max_per_class=40)


def _cfg(data, **kw) -> TrainConfig:
    return TrainConfig(epochs=2, batch_size=32, lr=0.05, device="cpu", seed=3, recipe=data.recipe).replace(**kw)


def test_resume_of_a_repopt_run_is_exact_and_the_checkpoint_holds_its_scales(tmp_path, digits) -> None:
    full = train(TINY, digits, _cfg(digits), out_dir=tmp_path / "full")
    train(TINY, digits, _cfg(digits, epochs=1), out_dir=tmp_path / "split")
    ckpt = Checkpoint.read(tmp_path / "split" / "last.pt")
    assert ckpt.scales is not None and ckpt.scales == full.scales  # the same search, recorded
    resumed = train(TINY, digits, _cfg(digits), out_dir=tmp_path / "split", resume=True)
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, msg=key)
    assert resumed.metrics["scales"]["sha256"] == full.scales.sha256
    # the search ran once, before the first epoch: a fifth of 2 epochs rounds up to 1 epoch of full batches
    assert resumed.metrics["scales"]["found_by"]["steps"] == len(digits.train) // 32


def test_training_with_a_scales_file_equals_training_with_the_scales_found(tmp_path, digits) -> None:
    found = train(TINY, digits, _cfg(digits, epochs=1))
    path = found.scales.write(tmp_path / "s.json")
    again = train(TINY, digits, _cfg(digits, epochs=1, scales=str(path)))
    assert again.scales == found.scales and again.metrics["scales"]["file"] == str(path)
    for key, value in found.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[key], value, msg=key)


def test_nas_train_repopt_then_export_passes_its_checks(tmp_path, capsys) -> None:
    out, exp = tmp_path / "run", tmp_path / "exp"
    code = main(["train", "--arch", "repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_r32", "--block", "repopt", "--epochs", "2",
                 "--out", str(out), "--max-per-class", "20", "--torch-threads", "1", "-f", "json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "repopt scales" in captured.err and json.loads(captured.out)["spec"].startswith("repopt_")
    scales = Scales.read(out / "scales.json")
    assert scales == Checkpoint.read(out / "last.pt").scales
    code = main(["export", "--checkpoint", str(out / "best.pt"), "--out", str(exp), "--max-per-class", "20",
                 "--calibration-images", "16", "-f", "json"])
    assert code == 0, capsys.readouterr().err
    card = json.loads((exp / "model_card.json").read_text())
    assert card["block"] == "repopt" and card["parity"]["passed"]
    assert card["training"]["scales"]["sha256"] == scales.sha256
    assert card["training"]["scales"]["found_by"]["kind"] == "search"


def test_a_search_over_repvgg_and_repopt_completes(tmp_path, capsys) -> None:
    db = f"sqlite:///{tmp_path / 'nas.db'}"
    code = main(["search", "-o", "acc,macs", "--classes", "10", "--depths", "1-2,1,1,1", "--widths",
                 "0.25,0.25,0.25,0.25", "--blocks", "repvgg,repopt", "--resolution", "32", "--trials", "4",
                 "--proxy-epochs", "1", "--proxy-steps", "3", "--proxy-selection", "3", "--storage", db,
                 "--study", "s", "--seed", "0", "-f", "json"])
    _, err = capsys.readouterr()
    assert code == 0, err
    import optuna

    study = optuna.load_study(study_name="s", storage=db)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 4 and {t.params["block"] for t in done} == {"repvgg", "repopt"}
    assert all(0 <= t.values[0] <= 1 for t in done)


DDP_SCRIPT = """
import json, os, sys
import torch
from types import SimpleNamespace
from torch.utils.data import TensorDataset
import trials.train as T
from search_space.spec import ArchSpec

g = torch.Generator().manual_seed(0)
x, y = torch.randn(40, 3, 32, 32, generator=g), torch.arange(40) % 4
x += y.view(-1, 1, 1, 1).float()
data = SimpleNamespace(train=TensorDataset(x, y), selection=TensorDataset(x[:10], y[:10]), classes=list("abcd"),
                       train_counts=[10] * 4)
spec = ArchSpec((1, 1, 1, 1), (0.25,) * 4, "repopt", resolution=32, num_classes=4)
result = T.train(spec, data, T.TrainConfig(epochs=2, batch_size=5, lr=0.05, device="cpu"))
checksum = sum(float(p.double().sum()) for p in result.model.parameters())
with open(os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.json"), "w") as f:
    json.dump({"checksum": checksum, "scales": result.scales.sha256, "steps": result.metrics["steps"],
               "hs_steps": result.metrics["scales"]["found_by"]["steps"]}, f)
"""


@pytest.mark.slow
def test_two_process_gloo_repopt_training_stays_in_sync(tmp_path: Path) -> None:
    """The masks multiply the all-reduced gradient on every rank: ranks find the same scales and end equal."""
    import os
    import subprocess
    import sys

    script = tmp_path / "ddp_repopt.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1
    assert r0["steps"] == 2 * 4 and r0["hs_steps"] == 4  # 40 images / 2 ranks / 5 per batch; HS: 1 epoch
