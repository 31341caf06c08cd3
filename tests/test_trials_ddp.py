"""DDP: a 2-process gloo run under torchrun on CPU completes, stays in sync, and writes checkpoints once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from types import SimpleNamespace
    from torch.utils.data import TensorDataset
    import trials.train as T
    from search_space.spec import ArchSpec

    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    real_write = T.Checkpoint.write

    def logged_write(checkpoint, path):
        with open(os.path.join(out, "saves.log"), "a") as log:
            log.write(f"{rank} {os.path.basename(path)}\\n")
        return real_write(checkpoint, path)

    T.Checkpoint.write = logged_write
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, 32, 32, generator=g), torch.arange(40) % 4
    x += y.view(-1, 1, 1, 1).float()  # learnable: the class shifts the mean
    data = SimpleNamespace(train=TensorDataset(x, y), selection=TensorDataset(x[:10], y[:10]),
                           classes=list("abcd"), train_counts=[10] * 4)
    spec = ArchSpec((1, 1, 1, 1), (0.25,) * 4, resolution=32, num_classes=4)
    cfg = T.TrainConfig(epochs=2, batch_size=5, lr=0.05, device="cpu").replace(data_sampler=sys.argv[2])
    events = []
    result = T.train(spec, data, cfg, out_dir=out, on_progress=events.append)
    checksum = sum(float(p.double().sum()) for p in result.model.parameters())  # BN buffers stay per rank
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"metrics": result.metrics, "checksum": checksum, "events": len(events),
                   "initialized": torch.distributed.is_initialized()}, f)
    """
)


def test_two_process_gloo_training_writes_each_checkpoint_once(tmp_path: Path) -> None:
    """One run (~20 s: two processes import torch); the plain shuffle's sharding is unit-tested."""
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(out), "class_balanced"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    saves = (out / "saves.log").read_text().split()
    # rank 0 only; per epoch last.pt (and best.pt when selection balanced accuracy improved)
    assert set(saves[0::2]) == {"0"} and saves[1::2].count("last.pt") == 2
    assert {p.name for p in out.glob("*.pt")} == {"last.pt", "best.pt"}
    assert not list(out.glob(".*.tmp"))
    m0, m1 = ranks[0]["metrics"], ranks[1]["metrics"]
    assert m0["world_size"] == 2 and m0["steps"] == 2 * 4  # 40 images / 2 ranks / 5 per batch, 2 epochs
    # all-reduced metrics and synchronized weights are identical on both ranks
    for key in ("top1", "balanced_acc", "train_loss", "best_epoch"):
        assert m0[key] == m1[key]
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # DDP keeps the parameters identical
    assert ranks[0]["events"] > 0 and ranks[1]["events"] == 0  # progress on rank 0 only
    assert not ranks[0]["initialized"]  # the group train() created is torn down again
    assert m0["selection_images"] == 10
