"""The default study name follows the search space: README's second search (another space, same objectives,
same storage) starts its own study instead of being refused by the first."""

from __future__ import annotations

import optuna
import pytest

from nas.objectives import SearchError
from nas.search import Search, SearchConfig, default_study_name
from nas.space import SearchSpace


def _config(url: str, **kw) -> SearchConfig:
    return SearchConfig(**{"objectives": "macs,params", "storage": url, "num_classes": 10, "trials": 2, "seed": 0,
                           **kw})


def test_a_search_over_another_space_opens_its_own_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    Search(_config(url)).run()
    other = SearchSpace(blocks=("repvgg", "qarepvgg"))
    second = Search(_config(url, space=other))  # before the fix: "was created with space …", exit 1
    second.run()
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(url))
    assert names[0] == "macs-params" and names[1].startswith("macs-params-space-") and len(names) == 2
    assert second.study.user_attrs["nas:config"]["space"]["blocks"] == ["repvgg", "qarepvgg"]
    again = Search(_config(url, space=SearchSpace(blocks=("repvgg", "qarepvgg"))))  # an equal space resumes it
    assert again.study_name == second.study_name


def test_the_digest_changes_with_the_space_and_only_then():
    objectives = Search(_config(None)).objectives
    spaces = [SearchSpace(), SearchSpace(resolutions=(48,)), SearchSpace(blocks=("qarepvgg",)),
              SearchSpace(depths=((1, 2), (1, 2), (1, 4), (1, 2)))]
    names = [default_study_name(objectives, s) for s in spaces]
    assert names[0] == "macs-params" == default_study_name(objectives)  # make demo's study keeps its name
    assert len(set(names)) == len(names)
    assert default_study_name(objectives, SearchSpace(resolutions=(48,))) == names[1]


def test_a_named_study_still_refuses_another_space(tmp_path):
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    Search(_config(url, study="mine")).run()
    with pytest.raises(SearchError, match="was created with space"):
        Search(_config(url, study="mine", space=SearchSpace(blocks=("qarepvgg",))))
