"""Where studies live: Optuna storages from URLs, with heartbeats, retries and masked passwords.

``sqlite:///nas.db`` (the default, in the working directory) serves one machine, several processes;
any SQLAlchemy URL Optuna's RDB storage accepts (``postgresql://user:pw@host/db``, ``mysql://…``)
lets workers on many machines share a study. ``:memory:`` keeps a study in this process only.

Every RDB storage records a heartbeat per running trial (every ``heartbeat_interval`` s). A trial
whose worker stops beating for ``grace_period`` s is marked failed by the next worker that starts a
trial, and :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` re-queues its parameters
(``max_retry`` times), so a dead worker's trial is retried, never lost.
"""

from __future__ import annotations

import importlib.util
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage, RetryHeartbeatStaleTrialCallback

from search_space.errors import NasError

DEFAULT_STORAGE = "sqlite:///nas.db"
MEMORY = ":memory:"
HEARTBEAT_INTERVAL = 10
MAX_RETRY = 2
_CREATE_ATTEMPTS = 5
# scheme://user:PASSWORD@host — the password runs to the last "@" before the path (greedy: an unescaped
# "@" inside a password must not leak its tail).
_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^/\s]*)(?P<tail>@)", re.IGNORECASE)


class StorageError(NasError):
    """A storage URL cannot be opened or a study cannot be found in it."""


def mask_url(url: str | None) -> str:
    """The URL with any password replaced by ``***`` (safe to print or log)."""
    if url is None:
        return MEMORY
    return _PASSWORD.sub(lambda m: f"{m['head']}***{m['tail']}", url)


def scrub(text: str, url: str | None) -> str:
    """``text`` with every URL password masked (also a bare password an error message may repeat)."""
    text = _PASSWORD.sub(lambda m: f"{m['head']}***{m['tail']}", text)
    m = _PASSWORD.search(url or "")
    if m and m["pw"]:
        text = text.replace(m["pw"], "***")
    return text


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _with_driver(url: str) -> str:
    """``postgresql://`` with the installed driver.

    SQLAlchemy ≥ 2.1 maps ``postgresql://`` to psycopg 3; the ``postgres`` extra installs psycopg2.
    """
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2{sep}{rest}"
    return url


def _engine_kwargs(url: str) -> dict[str, object]:
    if url.startswith("sqlite"):
        # Several worker processes share one file: wait for the write lock instead of failing at once.
        return {"connect_args": {"timeout": 60}}
    if url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    return {"pool_pre_ping": True}


def open_storage(
    url: str | None = DEFAULT_STORAGE,
    *,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL,
    grace_period: int | None = None,
    max_retry: int | None = MAX_RETRY,
    must_exist: bool = False,
) -> BaseStorage:
    """Open (creating tables if needed) the storage at ``url``; ``None`` or ``:memory:`` is in-process.

    ``heartbeat_interval=None`` turns heartbeats off; ``grace_period`` defaults to three intervals.
    ``must_exist=True`` (readers: ``nas pareto``, ``nas dashboard``) refuses to create a new SQLite file.
    Unreachable servers, missing drivers and bad URLs raise :class:`StorageError` (password masked).
    """
    if url is None or url == MEMORY:
        return InMemoryStorage()
    if "://" not in url:
        raise StorageError(f"storage {mask_url(url)!r} is not a URL",
                           "e.g. sqlite:///nas.db or postgresql://user@host:5432/db")
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        folder = Path(url.removeprefix("sqlite:///")).expanduser().parent
        if not folder.is_dir():
            raise StorageError(f"storage {mask_url(url)}: folder {folder} does not exist", "create it first")
        if must_exist and not Path(url.removeprefix("sqlite:///")).expanduser().is_file():
            raise StorageError(f"storage {mask_url(url)} does not exist",
                               "run a search first, or point to the storage that holds the study")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        kwargs: dict[str, object] = {}
        if heartbeat_interval is not None:
            kwargs = {
                "heartbeat_interval": int(heartbeat_interval),
                "grace_period": int(grace_period or 3 * heartbeat_interval),
                "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
            }
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                storage = RDBStorage(_with_driver(url), engine_kwargs=_engine_kwargs(url), **kwargs)  # type: ignore[arg-type]
            if url.startswith("sqlite"):
                _fast_sqlite(storage)
            return storage
        except Exception as exc:
            # Workers started together race to create the tables: the losers retry and find them made.
            if attempt + 1 < _CREATE_ATTEMPTS and _is_creation_race(exc):
                time.sleep(0.2 * (attempt + 1))
                continue
            _raise_open_error(url, exc)
    raise AssertionError("unreachable")


def _fast_sqlite(storage: RDBStorage) -> None:
    """Write-ahead log + ``synchronous=NORMAL``: a trial writes ~40 attributes, each a commit; without this
    every commit is an fsync (measured ~7× slower per trial). WAL also lets readers work beside one writer."""

    def pragmas(dbapi_connection: object, _record: object) -> None:
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # connections made while creating the tables lack the pragmas


def _is_creation_race(exc: BaseException) -> bool:
    text = str(exc).lower()
    return type(exc).__name__ == "IntegrityError" or any(
        w in text for w in ("already exists", "unique constraint", "duplicate key", "database is locked"))


def _raise_open_error(url: str, exc: BaseException) -> None:
    """Raise the one-line :class:`StorageError` for a storage that cannot be opened."""
    if isinstance(exc, ImportError):
        driver = url.split(":", 1)[0]
        hint = "pip install 'repvgg-hwnas[postgres]'" if driver.startswith("postgres") else "install its driver"
        raise StorageError(f"no database driver for storage {mask_url(url)} ({driver})", hint) from None
    # sqlalchemy errors: refused connection, unknown database, bad URL, …
    raise StorageError(f"cannot open storage {mask_url(url)}: {scrub(_first_line(exc), url)}",
                       "check the URL, that the server runs and that the database exists") from None


@contextmanager
def storage_errors(url: str | None) -> Iterator[None]:
    """Turn a storage failure in the middle of work (connection lost, …) into one masked line."""
    try:
        yield
    except NasError:
        raise
    except Exception as exc:
        mod = type(exc).__module__
        if mod.startswith(("sqlalchemy", "psycopg2", "sqlite3")):
            raise StorageError(f"storage {mask_url(url)} failed: {scrub(_first_line(exc), url)}",
                               "check the database server and retry the same command") from None
        raise


def study_names(storage: BaseStorage) -> list[str]:
    """Names of every study in ``storage``."""
    return [s.study_name for s in storage.get_all_studies()]


def resolve_study_name(storage: BaseStorage, name: str | None, url: str | None = None) -> str:
    """``name`` if that study exists; with ``name=None`` the storage's only study. Else :class:`StorageError`."""
    names = study_names(storage)
    if name is not None:
        if name in names:
            return name
        hint = f"studies there: {', '.join(names)}" if names else "run a search first"
        raise StorageError(f"no study {name!r} in {mask_url(url)}", hint)
    if len(names) == 1:
        return names[0]
    if not names:
        raise StorageError(f"no study in {mask_url(url)}",
                           "run a search first, or point to the storage that holds the study")
    raise StorageError(f"{mask_url(url)} holds {len(names)} studies", f"name the study: {', '.join(names)}")


def load_study(url: str | None = DEFAULT_STORAGE, name: str | None = None,
               storage: BaseStorage | None = None) -> optuna.Study:
    """Open an existing study for reading (no heartbeats); ``name=None`` picks the only one."""
    storage = storage or open_storage(url, heartbeat_interval=None, must_exist=True)
    with storage_errors(url):
        return optuna.load_study(study_name=resolve_study_name(storage, name, url), storage=storage)


def delete_study(url: str | None, name: str, storage: BaseStorage | None = None) -> None:
    """Delete a study and its trials (tests and clean-ups)."""
    storage = storage or open_storage(url, heartbeat_interval=None, must_exist=True)
    with storage_errors(url):
        optuna.delete_study(study_name=resolve_study_name(storage, name, url), storage=storage)
