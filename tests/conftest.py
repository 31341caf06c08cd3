"""Shared fixtures. Keep this file small: helpers that need torch import it lazily."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import wsgiref.util
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _pixel_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Decoded-pixel cache entries of the suite go to a temp folder, never to the user's ~/.cache/nas
    (commands run by tests inherit the variable)."""
    import os

    old = os.environ.get("NAS_CACHE_DIR")
    os.environ["NAS_CACHE_DIR"] = str(tmp_path_factory.mktemp("nas-cache"))
    yield
    if old is None:
        os.environ.pop("NAS_CACHE_DIR", None)
    else:
        os.environ["NAS_CACHE_DIR"] = old


@pytest.fixture
def repo_root() -> Path:
    """The repository root (where pyproject.toml lives)."""
    return REPO_ROOT


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread for the test (restored after): small tensors gain nothing from more, and on
    two shared, busy cores two threads spin against each other (measured ~10× slower here)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def randomize_bn() -> Callable[[Any, int], Any]:
    """A function ``(model, seed) -> model`` giving every BatchNorm random running stats and affine params.

    Freshly built BN layers are the identity in eval mode (mean 0, var 1, weight 1, bias 0), which would let a
    wrong fusion of the statistics pass unnoticed. Scales stay near 1 so deep nets keep finite activations.
    """
    import torch

    def apply(model: Any, seed: int = 0) -> Any:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
                n = bn.num_features
                bn.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                bn.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                bn.weight.copy_(torch.rand(n, generator=gen) * 0.8 + 0.4)
                bn.bias.copy_(torch.randn(n, generator=gen) * 0.2)
        return model

    return apply


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` loaded as the module ``<name>_bench`` (registered in ``sys.modules``: dataclasses look
    their module up there); loaded once per session."""
    module_name = f"{name}_bench"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, REPO_ROOT / "bench" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


@pytest.fixture(scope="session")
def bench_module() -> Callable[[str], ModuleType]:
    """:func:`load_bench`, for tests of the benchmark scripts."""
    return load_bench


def wsgi_get(app: Any, path: str) -> dict[str, Any]:
    """GET ``path`` from the WSGI ``app`` (optuna-dashboard's REST API) in-process; assert 200; the JSON body."""
    status: list[str] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path}
    wsgiref.util.setup_testing_defaults(environ)
    body = b"".join(app(environ, lambda s, h, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), status
    return json.loads(body)


@pytest.fixture(scope="session")
def dashboard_get() -> Callable[[Any, str], dict[str, Any]]:
    """:func:`wsgi_get`, for tests that read a study through optuna-dashboard's API."""
    return wsgi_get


@pytest.fixture
def postgres_url() -> str:
    """The test PostgreSQL server's URL (``NAS_TEST_POSTGRES``, default the local server's ``test`` database);
    skips the test when psycopg2 is missing or no server answers."""
    url = os.environ.get("NAS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install '.[postgres]')")
    try:
        psycopg2.connect(url, connect_timeout=3).close()
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL answers at {url}: {str(exc).strip().splitlines()[0]}")
    return url
