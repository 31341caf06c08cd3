"""``nas train``: train one architecture on a data folder (or the embedded digits), with checkpoints."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from nas.cli._common import add_format, add_renamed, emit, message, progress
from nas.runs import DATA_SAMPLERS, LOSSES  # torch-free: `nas --help` stays fast

EPILOG = """examples:
  nas train --arch repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_r32 --out runs/digits --epochs 10
                                          the embedded long-tailed digits, a tiny spec, ~10 s on a CPU
  nas train --arch A0 --resolution 112 --data ~/data/caltech101 --out runs/a0 --loss balanced_softmax \\
            --data-sampler none --augment --epochs 120 --lr 0.1 --batch-size 64
  nas train --out runs/a0 --resume --epochs 240       continue (and extend) an interrupted run
  torchrun --nproc_per_node 4 -m nas train --arch A0 --resolution 112 --data DIR --out runs/a0-ddp
                                          data-parallel on 4 GPUs (gloo on CPU); --batch-size is per process

Presets default to 224 px and 1000 classes: the class count always follows the data, the resolution
follows --resolution. Writes OUT/last.pt (every epoch), OUT/best.pt (best val balanced accuracy) and
OUT/metrics.json; every file is written atomically.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``nas train``."""
    p = sub.add_parser("train", help="train an architecture (checkpoints, exact resume, DDP under torchrun)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", metavar="SPEC|PRESET",
                   help="a preset (A0, N3, …) or a spec string; optional with --resume (the checkpoint's)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for last.pt, best.pt and metrics.json")
    p.add_argument("--resume", action="store_true",
                   help="continue OUT/last.pt; options not given come from it (only --epochs, --max-steps, "
                        "--workers and --device may change)")
    g = p.add_argument_group("architecture and data")
    g.add_argument("--resolution", type=int, help="input size in px (presets: 224; the seed used 112; >= 32)")
    g.add_argument("--classes-from-data", action="store_true",
                   help="let a spec string with its own class count (_cN) take the data's count instead")
    add_data_options(g)
    add_optimization_options(p.add_argument_group("optimization (defaults: trials.config.TrainConfig)"))
    r = p.add_argument_group("runtime")
    add_runtime_options(r)
    add_renamed(r, "--threads", "--torch-threads")
    add_format(p)
    p.set_defaults(func=cmd_train)


def add_data_options(g: argparse._ActionsContainer) -> None:
    """The data flags shared by ``nas train`` and ``nas export``."""
    g.add_argument("--data", metavar="PATH",
                   help="ImageFolder data: PATH/<class>/* or PATH/train|val/<class>/* (default: embedded digits)")
    g.add_argument("--val-ratio", type=float, help="share of each class held out when the folder has no val/ (0.1)")
    g.add_argument("--long-tail", metavar="PROFILE",
                   help="make the training split long-tailed: exp:IF (e.g. exp:100) or seed; digits: exp:10")
    g.add_argument("--augment", action="store_true", default=None,
                   help="add RandAugment to the random crop/flip (for long runs on real data)")
    g.add_argument("--max-per-class", type=int, metavar="N", help="at most N images per class (quick checks)")


def add_optimization_options(g: argparse._ActionsContainer) -> None:
    """The optimization flags shared by ``nas train`` and ``nas export`` (None = TrainConfig's default)."""
    g.add_argument("--epochs", type=int, help="passes over the training split (default 30)")
    g.add_argument("--batch-size", type=int, help="images per step and process (default 32)")
    g.add_argument("--lr", type=float, help="base learning rate, used as given (default 0.05)")
    g.add_argument("--lr-scaling", choices=["none", "linear"],
                   help="linear: lr × global batch / 256, as the official RepVGG scripts silently did (default none)")
    g.add_argument("--warmup-epochs", type=float, help="linear warm-up before the cosine decay (default 1)")
    g.add_argument("--weight-decay", type=float, help="on conv/linear weights only; BN and biases get none (4e-5)")
    g.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum")
    g.add_argument("--loss", metavar="{" + ",".join(LOSSES) + "}",  # checked by trials (one-line error)
                   help="ce; eqlv2, balanced_softmax or logit_adjust for long-tailed data (default ce)")
    g.add_argument("--label-smoothing", type=float, help="for the softmax losses (default 0.1)")
    g.add_argument("--data-sampler", choices=DATA_SAMPLERS,
                   help="how batches draw training images: none (shuffle) or class_balanced (every class equally "
                        "often, with replacement) for long-tailed data (default none)")
    add_renamed(g, "--sampler", "--data-sampler")
    g.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (quick checks)")
    g.add_argument("--seed", type=int, help="seeds the split, initialization, batch order and augmentation (0)")


def add_runtime_options(g: argparse._ActionsContainer) -> None:
    """Torch device, precision, loader and thread flags shared by ``nas train`` and ``nas export``."""
    g.add_argument("--device", help="torch device: auto (default), cpu, cuda or cuda:N")
    g.add_argument("--amp", action="store_true", default=None, help="float16 mixed precision (CUDA only)")
    g.add_argument("--channels-last", action="store_true", default=None, help="NHWC memory format (often faster)")
    g.add_argument("--workers", type=int, help="data-loader processes (default 0: load in the training process)")
    g.add_argument("--torch-threads", type=int, metavar="N",
                   help="torch CPU threads for training (default: torch's choice); 1 is often much faster on a "
                        "busy machine")


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig fields given on the command line (None where the flag was not given)."""
    return {
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "lr_scaling": args.lr_scaling,
        "warmup_epochs": args.warmup_epochs, "weight_decay": args.weight_decay, "nesterov": args.nesterov,
        "loss": args.loss, "label_smoothing": args.label_smoothing, "data_sampler": args.data_sampler,
        "max_steps": args.max_steps, "seed": args.seed, "device": args.device, "amp": args.amp,
        "channels_last": args.channels_last, "num_workers": args.workers,
    }


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``nas train``: train into ``--out``, report progress on stderr and the history on stdout."""
    from nas.runs import HISTORY_COLUMNS, run_training, set_torch_threads

    main = int(os.environ.get("RANK", "0")) == 0
    set_torch_threads(args.torch_threads)
    say = message if main else (lambda _text: None)
    with contextlib.ExitStack() as stack:
        bar: dict[str, Any] = {}

        def on_progress(event: dict[str, Any]) -> None:
            kind = event["event"]
            if kind == "start":
                say(f"training on {event['device']} × {event['world_size']}: effective lr {event['effective_lr']:g}, "
                    f"{event['total_steps']} steps, from step {event['step']}")
                bar["advance"] = stack.enter_context(progress("training", event["total_steps"] - event["step"]))
            elif kind == "step":
                bar["advance"](1, description=f"epoch {event['epoch']}/{event['epochs']}  loss {event['loss']:.3f}  "
                                              f"{event['images_per_s']:.0f} img/s")
            elif kind == "epoch":
                say(f"epoch {event['epoch']}/{event['epochs']}: loss {event['train_loss']:.4f}, val top-1 "
                    f"{event['val_top1']:.2%}, balanced {event['val_balanced_acc']:.2%}, "
                    f"{event['images_per_s']:.0f} img/s")

        data = {"path": args.data, "val_ratio": args.val_ratio, "long_tail": args.long_tail,
                "augment": args.augment, "max_per_class": args.max_per_class}
        run = run_training(args.arch, args.out, data=data, resolution=args.resolution,
                           classes_from_data=args.classes_from_data, config=config_overrides(args),
                           resume=args.resume, on_progress=on_progress, on_note=say)
    if not main:
        return 0
    summary = run.summary()
    if args.format == "table":
        keep = ["spec", "top1", "balanced_acc", "best_epoch", "best_balanced_acc", "epochs", "steps",
                "effective_lr", "images_per_s", "wall_s", "checkpoint_best"]
        emit(run.result.history, "table", columns=HISTORY_COLUMNS, title=f"training {run.spec}",
             extra={k: summary[k] for k in keep})
    else:
        emit(run.result.history, args.format, columns=HISTORY_COLUMNS, extra=summary)
    return 0
