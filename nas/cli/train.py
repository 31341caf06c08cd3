"""``nas train``: train one architecture on a data folder (or the embedded digits), with checkpoints."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from nas.cli import options  # the flag groups nas train shares with nas search and nas export
from nas.cli._common import add_format, add_renamed, emit, message, progress
from search_space import BLOCK_TYPES

EPILOG = """examples:
  nas train --arch repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_r32 --out runs/digits --epochs 10
                                          the embedded long-tailed digits, a tiny spec, ~10 s on a CPU
  nas train --arch A0 --resolution 112 --data ~/data/caltech101 --out runs/a0 --loss balanced_softmax \\
            --randaugment --epochs 120 --lr 0.1 --batch-size 64
  nas train --trial 7 --study acc-latency_T4 --out runs/t7 --epochs 60
                                          trial 7's spec, on the data and with the recipe the search used
  nas train --out runs/a0 --resume --epochs 240       continue (and extend) an interrupted run
  nas train --arch RepOpt-A0-hs --resolution 112 --data DIR --out runs/repopt --epochs 120
                                          RepOpt-VGG: scales searched on DIR first, then the plain model
                                          trained with gradient masks; OUT/scales.json is reusable (--scales)
  torchrun --nproc_per_node 4 -m nas train --arch A0 --resolution 112 --data DIR --out runs/a0-ddp
                                          data-parallel on 4 GPUs (gloo on CPU); --batch-size is per process

Presets default to 224 px and 1000 classes: the class count always follows the data, the resolution
follows --resolution. The best epoch is chosen on the selection split; the test split is never read
(see nas eval). Writes OUT/last.pt (every epoch), OUT/best.pt (best selection balanced accuracy) and
OUT/metrics.json; every file is written atomically.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``nas train``."""
    p = sub.add_parser("train", help="train an architecture (checkpoints, exact resume, DDP under torchrun)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_argument_group("what to train (--arch or --trial; with --resume, the checkpoint's)")
    ex = what.add_mutually_exclusive_group()
    ex.add_argument("--arch", metavar="SPEC|PRESET",
                    help="a preset (A0, N3, …) or a spec string; optional with --resume (the checkpoint's)")
    ex.add_argument("--trial", type=int, metavar="N",
                    help="trial N of a study: its spec, on the data and with the recipe the study recorded "
                         "(data and recipe flags given here override them)")
    options.add_study_options(what)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for last.pt, best.pt and metrics.json")
    p.add_argument("--resume", action="store_true",
                   help="continue OUT/last.pt; options not given come from it (only --epochs, --max-steps, "
                        "--workers and --device may change)")
    g = p.add_argument_group("architecture and data")
    g.add_argument("--resolution", type=int, help="input size in px (presets: 224; the seed used 112; >= 32)")
    g.add_argument("--block", choices=BLOCK_TYPES,
                   help="override the block type of --arch (repopt: a plain VGG trained with gradient masks)")
    g.add_argument("--classes-from-data", action="store_true",
                   help="let a spec string with its own class count (_cN) take the data's count instead")
    options.add_data_options(g)
    options.add_recipe_options(p.add_argument_group("recipe (shared with nas search and nas export)"))
    options.add_optimization_options(p.add_argument_group("optimization (defaults: trials.config.TrainConfig)"))
    r = p.add_argument_group("runtime")
    options.add_runtime_options(r)
    add_renamed(r, "--threads", "--torch-threads")
    add_format(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``nas train``: train into ``--out``, report progress on stderr and the history on stdout."""
    from nas.runs import HISTORY_COLUMNS, run_training, set_torch_threads, train_trial

    main = int(os.environ.get("RANK", "0")) == 0
    set_torch_threads(args.torch_threads)
    say = message if main else (lambda _text: None)
    if args.trial is not None and args.resume:
        message("[bold red]usage error:[/] --resume continues OUT/last.pt; it cannot go with --trial "
                "(see nas train --help)")
        return 2
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
            elif kind == "scales":
                origin = (f"file {event['file']}" if event.get("file")
                          else f"hyper-search stage, {event['found_by'].get('steps')} steps")
                say(f"repopt scales {event['sha256'][:12]} ({origin})")
            elif kind == "epoch":
                say(f"epoch {event['epoch']}/{event['epochs']}: loss {event['train_loss']:.4f}, selection top-1 "
                    f"{event['selection_top1']:.2%}, balanced {event['selection_balanced_acc']:.2%}, "
                    f"{event['images_per_s']:.0f} img/s")

        common: dict[str, Any] = {
            "data": options.data_overrides(args), "recipe": options.recipe_overrides(args),
            "config": options.config_overrides(args),
            "resolution": args.resolution, "block": args.block, "classes_from_data": args.classes_from_data,
            "on_progress": on_progress, "on_note": say}
        if args.trial is not None:
            run = train_trial(args.trial, args.out, study=args.study, storage=args.storage, **common)
        else:
            run = run_training(args.arch, args.out, resume=args.resume, **common)
    if not main:
        return 0
    summary = run.summary()
    if args.format == "table":
        keep = ["spec", "top1", "balanced_acc", "best_epoch", "best_balanced_acc", "epochs", "steps",
                "effective_lr", "images_per_s", "wall_s", "checkpoint_best"]
        emit(run.result.history, "table", columns=HISTORY_COLUMNS, title=f"training {run.spec}",
             extra={("selection " + k if k in ("top1", "balanced_acc", "best_balanced_acc") else k): summary[k]
                    for k in keep})
    else:
        emit(run.result.history, args.format, columns=HISTORY_COLUMNS, extra=summary)
    return 0
