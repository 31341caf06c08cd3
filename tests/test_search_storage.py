"""Storage URLs: masked passwords, one-line errors, study lookup, the dashboard command's wiring."""

from __future__ import annotations

import json
import os
import uuid

import optuna
import pytest
from optuna.storages import InMemoryStorage, RDBStorage

from nas.cli import main
from nas.storage import (
    StorageError,
    _with_driver,
    delete_study,
    load_study,
    mask_secrets,
    mask_url,
    open_storage,
    resolve_study_name,
)

PG_URL = os.environ.get("NAS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.mark.parametrize("url, masked", [
    ("postgresql://nas:secret@db:5432/nas", "postgresql://nas:***@db:5432/nas"),
    ("postgresql+psycopg2://nas:p@ss@db/nas", "postgresql+psycopg2://nas:***@db/nas"),
    ("mysql://root:@localhost/x", "mysql://root:***@localhost/x"),
    ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
    ("postgresql://u:se/cr?et@db/nas", "postgresql://u:***@db/nas"),  # "/" and "?" inside a password
    ("postgresql://u@db/nas?sslmode=require&password=s3/cr%40t", "postgresql://u@db/nas?password=***&sslmode=require"),
    ("postgresql://u@db/nas?sslmode=require&password=s3/cr@t", "postgresql://u@db/nas?sslmode=require&password=***"),
    ("postgresql://u:pw@db:notaport/nas", "postgresql://u:***@db:notaport/nas"),  # SQLAlchemy cannot read it
    ("host=db dbname=nas user=u password='se cret'", "host=db dbname=nas user=u password=***"),  # a libpq DSN
    ("sqlite:///nas.db", "sqlite:///nas.db"),
    (None, ":memory:"),
])
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_mask_secrets_removes_the_password_wherever_it_appears():
    url = "postgresql://nas:hunter2@db/nas"
    text = mask_secrets(f"could not connect to {url}; password hunter2 rejected", url)
    assert "hunter2" not in text and "nas:***@db" in text
    text = mask_secrets("invalid connection option; dsn: host=db password=hunter2 port=5432", None)
    assert text == "invalid connection option; dsn: host=db password=*** port=5432"
    text = mask_secrets("see postgresql://a:b/c@d/e and mysql://x:y@z/w", None)
    assert "b/c" not in text and ":y@" not in text


def test_the_drivers_reading_of_an_unescaped_at_is_masked():
    """psycopg2 reads ``u:p@ss@host`` as password ``p`` at host ``ss@host`` and says so: that is masked,
    and such a URL is refused before the driver sees it."""
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install '.[postgres]')")
    url = "postgresql://u:pw@xq7@127.0.0.1:9/nas"
    with pytest.raises(psycopg2.OperationalError) as info:
        psycopg2.connect(host="xq7@127.0.0.1", port=9, user="u", password="pw", dbname="nas", connect_timeout=3)
    assert "xq7" in str(info.value)  # what the driver prints for this URL
    assert "xq7" not in mask_secrets(str(info.value), url)
    with pytest.raises(StorageError, match="more than one '@'") as refused:
        open_storage(url)
    assert "xq7" not in str(refused.value) and "pw" not in str(refused.value)


SECRET = "Zq/9@x"  # "/" and "@" in it: the characters that broke masking
LEAKY = {
    "query": f"postgresql://postgres@127.0.0.1:{{port}}/test?password={SECRET.replace('@', '%40')}",
    "slash": f"postgresql://postgres:{SECRET.replace('@', '%40')}@127.0.0.1:{{port}}/test",
    "at": f"postgresql://postgres:{SECRET}@127.0.0.1:{{port}}/test",  # unescaped: refused, never leaked
    "at-query": f"postgresql://postgres@127.0.0.1:{{port}}/test?password={SECRET}",
    "dsn": f"host=127.0.0.1 port={{port}} dbname=test user=postgres password={SECRET}",
}


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and "Zq" not in text and "9@x" not in text and "%40x" not in text, text


@pytest.mark.parametrize("form", sorted(LEAKY))
def test_a_password_never_reaches_the_screen_when_the_storage_fails(form, capsys):
    url = LEAKY[form].format(port=9)  # nothing listens there
    for argv in (["search", "-o", "macs", "--classes", "10", "--trials", "1", "--storage", url],
                 ["pareto", "--storage", url]):
        assert main(argv) == 1
        out, err = capsys.readouterr()
        assert len(err.strip().splitlines()) == 1 and err.startswith("error:"), err
        _no_secret(out, err)


@pytest.mark.postgres
@pytest.mark.parametrize("form", ["query", "slash"])
def test_a_password_never_reaches_the_screen_when_the_search_runs(form, capsys):
    """The server trusts local connections, so the password is sent and ignored: the search runs and
    prints its study line and ``storage`` row."""
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install '.[postgres]')")
    url = LEAKY[form].format(port=PG_URL.rsplit(":", 1)[1].split("/")[0])
    study = f"nas-secret-{uuid.uuid4().hex[:10]}"
    try:
        code = main(["search", "-o", "macs,memory", "--classes", "10", "--trials", "2", "--storage", url,
                     "--study", study, "--depths", "1,1,1,1", "--widths", "0.25/0.5,0.25,0.25,0.5"])
        out, err = capsys.readouterr()
        if code != 0 and "cannot open storage" in err:
            pytest.skip(f"no PostgreSQL answers at {PG_URL}")
        assert code == 0, err
        assert f"study {study!r} in postgresql://postgres" in err and "storage: postgresql://postgres" in out
        _no_secret(out, err)
        for fmt in ("table", "json"):
            assert main(["pareto", "--storage", url, "--study", study, "-f", fmt]) == 0
            out, err = capsys.readouterr()
            _no_secret(out, err)
        assert main(["search", "-o", "macs,memory", "--classes", "10", "--trials", "2", "--storage", url,
                     "--study", study, "--depths", "1,1,1,1", "--widths", "0.25/0.5,0.25,0.25,0.5", "-f", "json"]) == 0
        out, err = capsys.readouterr()
        assert json.loads(out)["storage"].startswith("postgresql://postgres")
        _no_secret(out, err)
    finally:
        delete_study(PG_URL, study)


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
