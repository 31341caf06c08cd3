"""One meaning per flag: every ``--help`` shows only the current names, and every old spelling still works
(it parses to the same values) after exactly one deprecation line on stderr."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator

import pytest

from nas.cli import build_parser, main
from nas.cli._common import _RenamedFlag

#: The renames of issues 9 and 10 outside ``nas hw`` (a known answer): command -> {old spelling: new name}.
SPLIT_RENAMES = {"--val-ratio": "--selection-ratio", "--augment": "--randaugment"}  # issue 10: three splits, recipe
RENAMED = {
    "search": {"--device": "--target", "--hardware": "--tables"},  # it never had --val-ratio or --augment
    "train": {"--sampler": "--data-sampler", "--threads": "--torch-threads", **SPLIT_RENAMES},
    "export": {"--hardware": "--tables", "--sampler": "--data-sampler", "--threads": "--ort-threads", **SPLIT_RENAMES},
    "eval": {"--val-ratio": "--selection-ratio"},
}
#: Old names and the only commands where they still carry a (different, single) meaning.
OLD_NAMES = {
    "--device": {"train", "export"},  # the torch device; hardware targets are --target
    "--sampler": {"search"},  # Optuna's sampler; the class-balanced data sampler is --data-sampler
    "--hardware": set(),  # hardware CSVs are --tables
    "--table": set(),
    "--threads": set(),  # --torch-threads / --ort-threads
}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
Parser = argparse.ArgumentParser


def _commands(parser: Parser, words: tuple[str, ...] = ()) -> Iterator[tuple[str, Parser]]:
    """``("hw fit", parser)`` for the root and every command, found by walking the subparsers."""
    yield " ".join(words) or "nas", parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*words, name))


COMMANDS = dict(_commands(build_parser()))
ALIASES = [(cmd, old, action) for cmd, parser in COMMANDS.items() for action in parser._actions
           if isinstance(action, _RenamedFlag) for old in action.option_strings]


def test_the_commands_are_found_and_carry_the_issue_renames():
    assert {"search", "pareto", "train", "export", "data split", "eval", "arch show", "hw fit"} <= set(COMMANDS)
    found: dict[str, dict[str, str]] = {}
    for cmd, old, action in ALIASES:
        found.setdefault(cmd, {})[old] = action.new
    for cmd, renames in RENAMED.items():
        assert found.get(cmd) == renames


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_only_the_current_names(command):
    parser = COMMANDS[command]
    flags = set(FLAG.findall(parser.format_help()))
    stale = {f for f in flags & set(OLD_NAMES) if command not in OLD_NAMES[f]}
    assert not stale, f"nas {command} --help still says {sorted(stale)}"
    assert not {old for cmd, old, _ in ALIASES if cmd == command} & flags  # the aliases are hidden
    assert set(RENAMED.get(command, {}).values()) <= flags


def test_trials_help_says_what_it_counts():
    text = " ".join(COMMANDS["search"].format_help().split())
    assert "distinct specs" in text and "in total" in text


def _value(action: argparse.Action) -> list[str]:
    if action.nargs == 0:
        return []
    if action.choices:
        return [str(list(action.choices)[-1])]
    return ["3"] if action.type in (int, float) else ["T4=0.5" if "=" in str(action.metavar) else "v.csv"]


def _is_required(parser: argparse.ArgumentParser, action: argparse.Action) -> bool:
    """Required alone, or as the visible member of a required pair (a required flag and its old spelling)."""
    return action.required or any(g.required and action in g._group_actions and action.help != argparse.SUPPRESS
                                  for g in parser._mutually_exclusive_groups)


def _required(parser: argparse.ArgumentParser, skip: str) -> list[str]:
    """The smallest argv the command parses (but for ``skip``): a value for each required option and positional."""
    argv: list[str] = []
    for action in parser._actions:
        if action.dest == skip:
            continue
        if action.option_strings and _is_required(parser, action):
            argv += [action.option_strings[0], *_value(action)]
        elif not action.option_strings and action.nargs not in ("?", "*", 0) and action.dest != "help":
            argv += _value(action)
    return argv


@pytest.mark.parametrize(("command", "old", "action"), ALIASES, ids=[f"{c}:{o}" for c, o, _ in ALIASES])
def test_old_spelling_parses_like_the_new_one_with_one_note(command, old, action, capsys):
    parser = build_parser()
    base = [*command.split(), *_required(COMMANDS[command], skip=action.dest)]
    new = vars(parser.parse_args([*base, action.new, *_value(action)]))
    assert capsys.readouterr().err == ""
    again = vars(parser.parse_args([*base, old, *_value(action)]))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert again == new  # the old spelling sets what the new one sets
    current = next(a for a in COMMANDS[command]._actions if action.new in a.option_strings)
    if not _is_required(COMMANDS[command], current):  # ... and that is not just the default
        assert new != vars(parser.parse_args(base))
    assert len(lines) == 1 and old in lines[0] and action.new in lines[0] and "deprecated" in lines[0]


def test_search_target_reaches_the_library_under_both_spellings(capsys):
    """A bare ``latency`` objective takes the target: the study's metrics name it, whichever spelling."""
    fronts = []
    for flag in ("--target", "--device"):
        code = main(["search", "-o", "macs,latency", flag, "RV1126", "--classes", "10", "--depths", "1",
                     "--widths", "0.25/0.5", "--trials", "3", "--seed", "0", "--storage", ":memory:", "-f", "json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        body = json.loads(out)
        assert body["metric_names"] == ["macs", "latency_RV1126"]
        assert sum("deprecated" in line for line in err.splitlines()) == (flag == "--device")
        fronts.append([(r["spec"], r["macs"], r["latency_RV1126"]) for r in body["rows"]])
    assert fronts[0] == fronts[1] and fronts[0]


def test_export_options_reach_the_library_under_both_spellings(monkeypatch, tmp_path, capsys):
    import nas.deploy
    from trials.errors import ExportError

    seen = []

    def fake_export_arch(arch, out_dir, **kwargs):
        seen.append((kwargs["options"], kwargs["recipe"]["data_sampler"]))
        raise ExportError("stopped by the test")

    monkeypatch.setattr(nas.deploy, "export_arch", fake_export_arch)
    base = ["export", "--arch", "N1", "--out", str(tmp_path / "out")]
    new = ["--ort-threads", "3", "--tables", "a.csv", "--tables", "b.csv", "--data-sampler", "class_balanced"]
    old = ["--threads", "3", "--hardware", "a.csv", "--hardware", "b.csv", "--sampler", "class_balanced"]
    for flags, notes in ((new, 0), (old, 4)):
        assert main([*base, *flags]) == 1
        err = capsys.readouterr().err
        assert sum("deprecated" in line for line in err.splitlines()) == notes
        assert "stopped by the test" in err
    assert len(seen) == 2 and seen[0] == seen[1]
    options, data_sampler = seen[0]
    assert (options.ort_threads, list(options.tables), data_sampler) == (3, ["a.csv", "b.csv"], "class_balanced")


def test_train_threads_and_data_sampler_reach_the_library_under_both_spellings(monkeypatch, tmp_path, capsys):
    import torch

    import nas.runs
    from trials.errors import TrainError

    seen = []

    def fake_run_training(arch, out_dir, **kwargs):
        seen.append((torch.get_num_threads(), kwargs["recipe"]["data_sampler"]))
        raise TrainError("stopped by the test")

    monkeypatch.setattr(nas.runs, "run_training", fake_run_training)
    before = torch.get_num_threads()
    try:
        for flags in (["--torch-threads", "1", "--data-sampler", "class_balanced"],
                      ["--threads", "1", "--sampler", "class_balanced"]):
            torch.set_num_threads(2)
            assert main(["train", "--arch", "N1", "--out", str(tmp_path / "out"), *flags]) == 1
            assert "stopped by the test" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
    assert seen == [(1, "class_balanced"), (1, "class_balanced")]
