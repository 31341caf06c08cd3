"""Storage URLs: masked passwords, one-line errors, study lookup, the dashboard command's wiring."""

from __future__ import annotations

import optuna
import pytest
from optuna.storages import InMemoryStorage, RDBStorage

from nas.cli import main
from nas.storage import (
    StorageError,
    _with_driver,
    load_study,
    mask_url,
    open_storage,
    resolve_study_name,
    scrub,
)


@pytest.mark.parametrize("url, masked", [
    ("postgresql://nas:secret@db:5432/nas", "postgresql://nas:***@db:5432/nas"),
    ("postgresql+psycopg2://nas:p@ss@db/nas", "postgresql+psycopg2://nas:***@db/nas"),
    ("mysql://root:@localhost/x", "mysql://root:***@localhost/x"),
    ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
    ("sqlite:///nas.db", "sqlite:///nas.db"),
    (None, ":memory:"),
])
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_scrub_removes_the_password_wherever_it_appears():
    url = "postgresql://nas:hunter2@db/nas"
    text = scrub(f"could not connect to {url}; password hunter2 rejected", url)
    assert "hunter2" not in text and "nas:***@db" in text


def test_open_storage_kinds_and_errors(tmp_path):
    assert isinstance(open_storage(None), InMemoryStorage) and isinstance(open_storage(":memory:"), InMemoryStorage)
    assert isinstance(open_storage(f"sqlite:///{tmp_path / 'a.db'}"), RDBStorage)
    with pytest.raises(StorageError, match="not a URL"):
        open_storage("nas.db")
    with pytest.raises(StorageError, match="does not exist"):
        open_storage("sqlite:////nonexistent/folder/a.db")
    with pytest.raises(StorageError) as info:
        open_storage("postgresql://u:topsecret@127.0.0.1:9/x")
    assert "topsecret" not in str(info.value) and "cannot open storage" in str(info.value)
    assert _with_driver("sqlite:///a.db") == "sqlite:///a.db"
    assert _with_driver("postgresql://u@h/db").startswith("postgresql")


def test_study_lookup(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = open_storage(url, heartbeat_interval=None)
    with pytest.raises(StorageError, match="no study in"):
        resolve_study_name(storage, None, url)
    optuna.create_study(study_name="a", storage=storage)
    assert resolve_study_name(storage, None, url) == "a"
    assert load_study(url).study_name == "a"
    optuna.create_study(study_name="b", storage=storage)
    with pytest.raises(StorageError, match="holds 2 studies"):
        resolve_study_name(storage, None, url)
    with pytest.raises(StorageError, match="studies there: a, b"):
        resolve_study_name(storage, "c", url)


def test_dashboard_command_serves_the_storage(monkeypatch, tmp_path, capsys):
    optuna_dashboard = pytest.importorskip("optuna_dashboard", reason="pip install '.[dashboard]'")
    served = {}

    def fake_run_server(storage, host, port):
        served.update(storage=storage, host=host, port=port)

    monkeypatch.setattr(optuna_dashboard, "run_server", fake_run_server)
    url = f"sqlite:///{tmp_path / 'd.db'}"
    assert main(["dashboard", "--storage", url]) == 1  # readers never create a database file
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "d.db").exists()
    open_storage(url)
    assert main(["dashboard", "--storage", url, "--port", "8123"]) == 0
    assert isinstance(served["storage"], RDBStorage) and (served["host"], served["port"]) == ("127.0.0.1", 8123)
    assert "http://127.0.0.1:8123" in capsys.readouterr().err

    def busy(storage, host, port):
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(optuna_dashboard, "run_server", busy)
    assert main(["dashboard", "--storage", url]) == 1
    assert "choose another --port" in capsys.readouterr().err
