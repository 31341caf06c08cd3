"""Flag groups that several commands share, defined once: the data and its splits, the training recipe,
the optimization budget, the runtime, and the study a trial comes from. ``nas search``, ``nas train`` and
``nas export`` take the same data and recipe flags with the same meaning; each ``*_overrides`` returns
``None`` for a flag not given, so the library's defaults (or what a checkpoint or study recorded) apply.
"""

from __future__ import annotations

import argparse

from nas.cli._common import add_renamed
from nas.fidelity import DEFAULT_ETA, DEFAULT_RUNGS, FidelityConfig, parse_rungs
from nas.objectives import Limits
from nas.runs import DATA_SAMPLERS, LOSSES  # torch-free: `nas --help` stays fast
from nas.space import SearchSpace, space_from_options
from nas.storage import DEFAULT_STORAGE


def _fraction_pair(text: str) -> tuple[float, float]:
    """``"0.6,1"`` → ``(0.6, 1.0)`` (checked further by the recipe)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two numbers), got {text!r}") from None
    return low, high


def add_data_options(g: argparse._ActionsContainer, *, old_spellings: bool = True) -> None:
    """Where the images come from (``--data``) and how they are split into train / selection / test.
    ``old_spellings=False`` leaves out the deprecated aliases (for a command that never had them)."""
    g.add_argument("--data", metavar="PATH",
                   help="ImageFolder data: PATH/<class>/* (all three splits carved) or PATH/train|val/<class>/* "
                        "(val/ is the test split) (default: the embedded digits)")
    add_split_options(g, old_spellings=old_spellings)


def add_split_options(g: argparse._ActionsContainer, *, old_spellings: bool = True) -> None:
    """How a data set is split into train / selection / test (without the source)."""
    g.add_argument("--selection-ratio", type=float, metavar="R",
                   help="share of each class carved from the training images for the selection split, on which "
                        "the search ranks and the best epoch is chosen (default 0.1)")
    if old_spellings:
        add_renamed(g, "--val-ratio", "--selection-ratio")
    g.add_argument("--test-ratio", type=float, metavar="R",
                   help="share of each class carved for the test split when the folder has no val/ (default 0.1); "
                        "only final reports read it")
    g.add_argument("--max-per-class", type=int, metavar="N", help="at most N images per class (quick checks)")


def add_study_options(g: argparse._ActionsContainer) -> None:
    """Which study a ``--trial`` or ``--pareto`` refers to."""
    g.add_argument("--storage", default=DEFAULT_STORAGE, help=f"study storage URL (default {DEFAULT_STORAGE})")
    g.add_argument("--study", help="study name (default: the storage's only study)")


def add_recipe_options(g: argparse._ActionsContainer, *, old_spellings: bool = True) -> None:
    """The training recipe (trials.recipe.Recipe): the same for the proxy and for full training.
    ``old_spellings=False`` leaves out the deprecated aliases (``nas search``'s ``--sampler`` is Optuna's)."""
    g.add_argument("--hflip", type=float, metavar="P",
                   help="probability of a horizontal flip per training image (default 0.5 for folders, 0 for the "
                        "digits); use 0 for text, digits, signs, anything whose classes come in left/right pairs")
    g.add_argument("--crop-scale", type=_fraction_pair, metavar="LO,HI",
                   help="random-crop area range as fractions of the image (default 0.6,1; smaller LO is more "
                        "aggressive and hurts small images)")
    g.add_argument("--randaugment", action="store_true", default=None,
                   help="add RandAugment before the crop (helps long runs on real data)")
    if old_spellings:
        add_renamed(g, "--augment", "--randaugment")
    g.add_argument("--loss", metavar="{" + ",".join(LOSSES) + "}",  # checked by trials (one-line error)
                   help="ce; eqlv2, balanced_softmax or logit_adjust for long-tailed data (default ce)")
    g.add_argument("--data-sampler", choices=DATA_SAMPLERS,
                   help="how batches draw training images: none (shuffle) or class_balanced (every class equally "
                        "often, with replacement) for long-tailed data (default none)")
    if old_spellings:
        add_renamed(g, "--sampler", "--data-sampler")
    g.add_argument("--label-smoothing", type=float, help="for the softmax losses (default 0.1)")
    add_long_tail_option(g)


def add_long_tail_option(g: argparse._ActionsContainer) -> None:
    """The recipe's long-tail profile (it decides the training split's images, so data reports take it too)."""
    g.add_argument("--long-tail", metavar="PROFILE",
                   help="make the training split long-tailed: exp:IF (e.g. exp:100), seed, or none; the digits "
                        "default to exp:10")


def add_optimization_options(g: argparse._ActionsContainer) -> None:
    """The optimization budget of full training (None = TrainConfig's default)."""
    g.add_argument("--epochs", type=int, help="passes over the training split (default 30)")
    g.add_argument("--batch-size", type=int, help="images per step and process (default 32)")
    g.add_argument("--lr", type=float, help="base learning rate, used as given (default 0.05)")
    g.add_argument("--lr-scaling", choices=["none", "linear"],
                   help="linear: lr × global batch / 256, as the official RepVGG scripts silently did (default none)")
    g.add_argument("--warmup-epochs", type=float, help="linear warm-up before the cosine decay (default 1)")
    g.add_argument("--weight-decay", type=float, help="on conv/linear weights only; BN and biases get none (4e-5)")
    g.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum")
    g.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (quick checks)")
    g.add_argument("--seed", type=int, help="seeds the splits, initialization, batch order and augmentation (0)")
    g.add_argument("--scales", metavar="FILE|search",
                   help="repopt block only: the gradient-mask scales, a scales JSON file (e.g. from an earlier run's "
                        "scales.json) or 'search' to find them on the training split first (default search)")
    g.add_argument("--hs-steps", type=int, metavar="N",
                   help="repopt block only: steps of that scale search (default: a fifth of the run's budget); more "
                        "steps give steadier scales")


def add_runtime_options(g: argparse._ActionsContainer) -> None:
    """Torch device, precision, loader and thread flags shared by ``nas train`` and ``nas export``."""
    g.add_argument("--device", help="torch device: auto (default), cpu, cuda or cuda:N")
    g.add_argument("--amp", action="store_true", default=None, help="float16 mixed precision (CUDA only)")
    g.add_argument("--channels-last", action="store_true", default=None, help="NHWC memory format (often faster)")
    g.add_argument("--workers", type=int, help="data-loader processes (default 0: load in the training process)")
    g.add_argument("--torch-threads", type=int, metavar="N",
                   help="torch CPU threads for training (default: torch's choice); 1 is often much faster on a "
                        "busy machine")


def data_overrides(args: argparse.Namespace) -> dict[str, object]:
    """Data-source fields given on the command line (None where the flag was not given)."""
    return {"path": getattr(args, "data", None), "selection_ratio": args.selection_ratio, "test_ratio": args.test_ratio,
            "max_per_class": args.max_per_class}


def recipe_overrides(args: argparse.Namespace) -> dict[str, object]:
    """Recipe fields given on the command line (None where the flag was not given)."""
    return {"hflip": args.hflip, "crop_scale": args.crop_scale, "randaugment": args.randaugment,
            "loss": args.loss, "data_sampler": args.data_sampler, "label_smoothing": args.label_smoothing,
            "long_tail": args.long_tail}


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    """TrainConfig fields (budget and runtime) given on the command line (None where not given)."""
    return {
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "lr_scaling": args.lr_scaling,
        "warmup_epochs": args.warmup_epochs, "weight_decay": args.weight_decay, "nesterov": args.nesterov,
        "max_steps": args.max_steps, "seed": args.seed, "device": args.device, "amp": args.amp,
        "channels_last": args.channels_last, "num_workers": args.workers, "scales": args.scales,
        "hs_steps": args.hs_steps,
    }


def add_fidelity_options(g: argparse._ActionsContainer) -> None:
    """Multi-fidelity search: successive halving over rungs of the proxy (:mod:`nas.fidelity`)."""
    g.add_argument("--fidelity", action="store_true",
                   help="train every spec for the first rung only and continue the best 1/eta at each rung from "
                        "their checkpoints (successive halving with Pareto promotion): use it when one short proxy "
                        "budget cannot rank the space; the top rung is the proxy's full budget")
    g.add_argument("--rungs", metavar="E1,E2,...",
                   help=f"proxy epochs at each rung, increasing (default {','.join(map(str, DEFAULT_RUNGS))}); "
                        "the last replaces --proxy-epochs; implies --fidelity")
    g.add_argument("--eta", type=float, metavar="ETA",
                   help=f"each rung promotes its best 1/ETA to the next (default {DEFAULT_ETA:g}); implies --fidelity")
    g.add_argument("--rung-dir", metavar="DIR",
                   help="folder for the checkpoints between rungs (default: next to a SQLite storage, nas.db -> "
                        "nas.rungs/); needed with a database server: a folder every worker reaches (a worker that "
                        "cannot see a checkpoint retrains the spec from scratch); implies --fidelity")


def fidelity_config(args: argparse.Namespace) -> FidelityConfig | None:
    """The :class:`~nas.fidelity.FidelityConfig` of the flags of :func:`add_fidelity_options` (None: off)."""
    if not (args.fidelity or args.rungs or args.eta is not None or args.rung_dir):
        return None
    rungs = parse_rungs(args.rungs) if args.rungs else DEFAULT_RUNGS
    return FidelityConfig(rungs, DEFAULT_ETA if args.eta is None else args.eta, args.rung_dir)


def add_space_options(p: argparse.ArgumentParser, title: str) -> None:
    """The search-space flags (``--space`` FILE, then ``--depths`` … override it), as ``nas search`` takes them."""
    g = p.add_argument_group(title)
    g.add_argument("--space", metavar="FILE", help="space file (see examples/space.toml)")
    g.add_argument("--depths", help='depth range per stage, e.g. "1-2,1-4,1-8,1"')
    g.add_argument("--widths", help='width choices per stage, e.g. "0.25/0.5,0.5/1,0.5/1,1/2.5"')
    g.add_argument("--blocks", help="block types, e.g. repvgg,qarepvgg")
    g.add_argument("--groups", help="group patterns, e.g. 1,2")
    g.add_argument("--resolution", help="input resolutions in px, e.g. 32,48")


def space_of(args: argparse.Namespace) -> SearchSpace:
    """The space the flags of :func:`add_space_options` describe (the default search space, overridden)."""
    return space_from_options(args.space, args.depths, args.widths, args.blocks, args.groups, args.resolution)


def add_limit_options(p: argparse.ArgumentParser, *, search: bool) -> None:
    """The limits on latency, memory, parameters and MACs: constraints of ``nas search`` (``search``), filters
    of the front in ``nas pareto``."""
    verb = "constraint (trials over it are infeasible, never trained)" if search else "filter the front"
    p.add_argument("--max-latency", action="append", default=[], metavar="TARGET=MS",
                   help=f"predicted latency limit on a hardware target; repeatable; {verb}")
    p.add_argument("--max-memory", metavar="KIB", help=f"peak on-chip memory limit in KiB; {verb}")
    p.add_argument("--max-params", metavar="N", help=f"parameter limit (5M = 5e6); {verb}")
    p.add_argument("--max-macs", metavar="N", help=f"MAC limit (300M = 3e8); {verb}")


def limits_of(args: argparse.Namespace, min_acc: bool = False) -> Limits:
    """The :class:`~nas.objectives.Limits` of the flags of :func:`add_limit_options` (and ``--min-acc``)."""
    return Limits.parse(args.max_latency, args.max_memory, args.max_params, args.max_macs,
                        args.min_acc if min_acc else None)


def add_storage_options(p: argparse.ArgumentParser, study_help: str) -> None:
    """The storage a search writes and ``nas pareto`` reads (``--storage``), and the study in it."""
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help="Optuna storage URL: sqlite:///FILE for one machine, postgresql://user@host/db for "
                        f"many, :memory: for a throw-away run (default {DEFAULT_STORAGE})")
    p.add_argument("--study", help=study_help)
