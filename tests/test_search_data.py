"""The search on the recipe and splits: the study's data record, refused resumes, proxy seeds, and a real
search that never reads the test split."""

from __future__ import annotations

import statistics

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from PIL import Image
from torch.utils.data import Dataset

from nas.accuracy import proxy_config
from nas.objectives import SearchError
from nas.search import Search, SearchConfig, run_search
from nas.space import SearchSpace
from nas.study import DATA_ATTR, recorded_data
from search_space import ArchSpec
from trials.data import DataSettings, load_data
from trials.proxy import ProxyBudget, ProxyConfig, proxy_accuracy
from trials.recipe import DIGITS_RECIPE, Recipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TWO_SPECS = SearchSpace(depths=((1, 1),) * 4, widths=((0.25, 0.5), (0.25,), (0.25,), (0.25,)))
SMALL = {"epochs": 1, "max_steps": 3, "selection_per_class": 5}  # a proxy run of ~0.1 s


def config(**kw) -> SearchConfig:
    base = dict(objectives="acc,macs", storage=None, space=TWO_SPECS, trials=2, seed=0,
                proxy=proxy_config(SMALL))
    base.update(kw)
    return SearchConfig(**base)


class Untouchable(Dataset):
    """A test split that fails the run on any access: its length, an item, any attribute."""

    def __len__(self) -> int:
        raise AssertionError("the search asked for the size of the test split")

    def __getitem__(self, i: int) -> object:
        raise AssertionError("the search read a test image")

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the search looked at the test split ({name})")


def test_a_real_search_never_reads_the_test_split(monkeypatch: pytest.MonkeyPatch) -> None:
    real, loaded = DataSettings.load, []

    def instrumented(self, resolution, recipe=None, **kw):
        bundle = real(self, resolution, recipe, **kw)
        bundle.test = Untouchable()
        loaded.append(resolution)
        return bundle

    monkeypatch.setattr(DataSettings, "load", instrumented)
    space = SearchSpace(depths=((1, 1),) * 4, widths=((0.25,),) * 4, resolutions=(32, 40))
    summary = run_search(config(objectives="acc,bacc,latency:T4", space=space, repeats=2, zero_cost=True))
    trials = summary.study.get_trials(states=(TrialState.COMPLETE,))
    assert summary.evaluated == 2 and sorted(loaded) == [32, 40]  # one load per resolution, each at its size
    for t in trials:
        assert t.user_attrs["proxy_resolution"] == ArchSpec.parse(t.user_attrs["spec"]).resolution
        assert len(t.user_attrs["acc_seeds"]) == 2 and "zc_synflow" in t.user_attrs
    assert recorded_data(summary.study).counts["test"] == tuple(load_data(None, 32).test_counts)  # counts only


def test_repeats_record_each_seed_and_their_mean_and_spread() -> None:
    summary = run_search(config(space=SearchSpace(depths=((1, 1),) * 4, widths=((0.25,),) * 4), trials=1,
                                repeats=3))
    (trial,) = summary.study.get_trials(states=(TrialState.COMPLETE,))
    spec, data = ArchSpec.parse(trial.user_attrs["spec"]), load_data(None, 32)
    direct = [proxy_accuracy(spec, data, ProxyConfig(recipe=DIGITS_RECIPE, budget=ProxyBudget(**SMALL, seed=s)))
              for s in (0, 1, 2)]  # the same runs, outside the search
    attrs = trial.user_attrs
    assert attrs["acc_seeds"] == [r.top1 for r in direct] and attrs["bacc_seeds"] == [r.balanced_acc for r in direct]
    assert trial.values[0] == attrs["acc"] == pytest.approx(statistics.mean(attrs["acc_seeds"]))
    assert attrs["acc_sd"] == pytest.approx(statistics.stdev(attrs["acc_seeds"]))
    assert attrs["bacc_sd"] == pytest.approx(statistics.stdev(attrs["bacc_seeds"]))
    assert 0 <= attrs["acc_low"] <= attrs["acc_high"] <= 1 and attrs["proxy_selection_images"] == 50
    assert summary.study.user_attrs["nas:config"]["proxy"]["repeats"] == 3


def test_the_study_records_its_data_and_refuses_other_data_or_recipe(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    first = run_search(config(storage=url, study="d", heartbeat_interval=None))
    record = recorded_data(first.study)
    expected = load_data(None, 40, recipe=DIGITS_RECIPE)  # another resolution: the counts do not depend on it
    assert record.settings == DataSettings() and record.recipe == DIGITS_RECIPE == Recipe.for_data(None)
    assert list(record.classes) == expected.classes
    assert record.counts == {"train": tuple(expected.train_counts), "selection": tuple(expected.selection_counts),
                             "test": tuple(expected.test_counts)}
    stored = optuna.load_study(study_name="d", storage=url).user_attrs[DATA_ATTR]
    assert set(stored) == {"settings", "recipe", "classes", "counts"} and stored["recipe"]["hflip"] == 0.0
    n_trials = len(first.study.trials)
    for change, words in [
        (dict(recipe=DIGITS_RECIPE.replace(hflip=0.5)), "searched with recipe hflip 0; this search asks for hflip 0.5"),
        (dict(data=DataSettings(selection_ratio=0.2)), "selection_ratio 0.1; this search asks for selection_ratio 0.2"),
        (dict(data=DataSettings(seed=3)), "searched with data seed 0; this search asks for seed 3"),
        (dict(proxy=proxy_config({**SMALL, "epochs": 2})), "created with proxy budget epochs 1, this search asks for "
                                                           "budget epochs 2"),
        (dict(repeats=2), "created with proxy repeats 1, this search asks for repeats 2"),
    ]:
        with pytest.raises(SearchError, match=words):
            Search(config(storage=url, study="d", **change))
    with pytest.raises(SearchError, match="proxy's recipe"):
        Search(config(storage=url, study="d", proxy=ProxyConfig(recipe=Recipe(), budget=ProxyBudget(**SMALL))))
    study = optuna.load_study(study_name="d", storage=url)
    assert len(study.trials) == n_trials and study.user_attrs[DATA_ATTR] == stored  # intact
    assert run_search(config(storage=url, study="d")).ran == 0  # the same settings resume


def _folder(root, per_class=10):
    rng = np.random.default_rng(0)
    for c, name in enumerate(("ant", "bee", "cat")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = (rng.random((12, 12, 3)) * 80 + 60 * c).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def fixed_accuracy(spec, data):
    assert data is not None and len(data.classes) == 3
    return {"top1": 0.5, "balanced_acc": 0.5}


def test_a_changed_or_missing_folder_is_one_line(tmp_path, monkeypatch) -> None:
    _folder(tmp_path / "imgs")
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'f.db'}"
    settings = DataSettings(path="imgs")  # relative: the study records where it is
    run_search(config(storage=url, study="f", data=settings, proxy=None), fixed_accuracy)
    record = recorded_data(optuna.load_study(study_name="f", storage=url))
    assert record.settings.path == str(tmp_path / "imgs") and record.recipe == Recipe()
    assert record.classes == ("ant", "bee", "cat") and sum(record.counts["train"]) == 24  # 8 + 8 + 8
    assert record.load(32).classes == ["ant", "bee", "cat"]  # unchanged: loads and passes the check
    for i in range(3):
        (tmp_path / "imgs" / "bee" / f"{i}.png").unlink()
    with pytest.raises(SearchError, match=r"imgs changed since the search: train images of 1 classes differ "
                                          r"\(e.g. 'bee': 8 then, 7 now\)"):  # 7 left: no test image, all 7 train
        record.load(32)
    with pytest.raises(SearchError, match="changed since the search"):
        Search(config(storage=url, study="f", data=settings, proxy=None), fixed_accuracy)
    (tmp_path / "imgs").rename(tmp_path / "moved")
    with pytest.raises(SearchError, match="imgs of the search is missing") as info:
        record.load(32)
    assert "restore the data the study searched on" in info.value.hint
    _folder(tmp_path / "imgs", per_class=10)
    (tmp_path / "imgs" / "dog").mkdir()
    Image.new("RGB", (12, 12)).save(tmp_path / "imgs" / "dog" / "0.png")
    with pytest.raises(SearchError, match=r"1 classes added \(e.g. 'dog'\)"):
        record.load(32)
