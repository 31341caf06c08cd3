"""Where studies live: Optuna storages from URLs, with heartbeats, retries and masked passwords.

``sqlite:///nas.db`` (the default, in the working directory) serves one machine, several processes;
any SQLAlchemy URL Optuna's RDB storage accepts (``postgresql://user:pw@host/db``, ``mysql://…``)
lets workers on many machines share a study. ``:memory:`` keeps a study in this process only.

Every RDB storage records a heartbeat per running trial (every ``heartbeat_interval`` s). A trial
whose worker stops beating for ``grace_period`` s is marked failed by the next worker that starts a
trial, and :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` re-queues its parameters
(``max_retry`` times), so a dead worker's trial is retried, never lost.

A dropped database connection is not fatal: connections are checked before use (``pool_pre_ping``) and
a storage call that loses its connection is retried (:class:`ReconnectingStorage`, about a minute in
all) before the command stops with one line. Passwords never reach the screen: :func:`mask_url` and
:func:`mask_secrets` hide them in URLs, ``password=`` parameters and key-values, and driver messages.
"""

from __future__ import annotations

import functools
import importlib.util
import random
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning, StorageInternalError
from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import URL, make_url

from search_space.errors import NasError

DEFAULT_STORAGE = "sqlite:///nas.db"
MEMORY = ":memory:"
HEARTBEAT_INTERVAL = 10
MAX_RETRY = 2
_CREATE_ATTEMPTS = 5
#: Waits (s) before each new attempt of a storage call that lost its database connection: 8 retries,
#: about a minute in all (each wait ±25 %, so that workers do not reconnect in lockstep).
RECONNECT_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
_MASK = "***"
#: ``password=…`` in a URL's query, a libpq DSN (``host=h password=…``) or a driver's message.
_KEY_VALUE = re.compile(r"(?P<key>\b(?:ssl)?(?:password|passwd|pwd))(?P<eq>\s*=\s*)"
                        r"(?P<value>'(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^\s&]+)", re.IGNORECASE)
_URL_IN_TEXT = re.compile(r"[a-z][a-z0-9+.\-]*://[^\s'\"<>]+", re.IGNORECASE)
# scheme://user:PASSWORD@ for text that is not a URL SQLAlchemy can read: the password runs to the last "@"
# before white space (greedy: an unescaped "@" inside a password must not leak its tail).
_USERINFO = re.compile(r"(?P<head>[a-z][a-z0-9+.\-]*://[^:/@\s]*:)(?P<pw>\S*)(?P<tail>@)", re.IGNORECASE)


class StorageError(NasError):
    """A storage URL cannot be opened or a study cannot be found in it."""


class StorageLostError(StorageError):
    """The database connection stayed lost through every retry (:data:`RECONNECT_DELAYS`)."""


def _stray_at(url: str) -> bool:
    """A server URL with more than one "@": an unescaped "@" in a password or parameter, which SQLAlchemy
    and the driver misread (``u:p@ss@host`` as password ``p`` at host ``ss@host``)."""
    scheme, sep, rest = url.partition("://")
    return bool(sep) and not scheme.startswith("sqlite") and rest.count("@") > 1


def _parse(url: str) -> URL | None:
    """SQLAlchemy's reading of ``url``; None if it is not a URL or one SQLAlchemy misreads."""
    if _stray_at(url):
        return None
    try:
        return make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return None


def _secret_keys(parsed: URL) -> list[str]:
    return [k for k in parsed.query if _KEY_VALUE.fullmatch(f"{k}=x")]


def mask_url(url: str | None) -> str:
    """The storage URL safe to show: its password, ``password=`` query parameters and a libpq DSN's
    ``password=`` replaced by ``***`` (rendered by SQLAlchemy; a URL without secrets is returned as given)."""
    if url is None:
        return MEMORY
    parsed = _parse(url)
    if parsed is None:
        return _mask_text(url)
    keys = _secret_keys(parsed)
    if parsed.password is None and not keys:
        return url
    hidden = parsed.update_query_dict({k: _MASK for k in keys}) if keys else parsed
    return hidden.render_as_string(hide_password=True).replace("%2A%2A%2A", _MASK)


def _mask_text(text: str) -> str:
    text = _USERINFO.sub(lambda m: f"{m['head']}{_MASK}{m['tail']}", text)
    return _KEY_VALUE.sub(lambda m: f"{m['key']}{m['eq']}{_MASK}", text)


def _secrets(url: str | None) -> dict[str, str]:
    """Each secret of ``url`` as a driver may repeat it → what to show instead (longest first)."""
    found: dict[str, str] = {}
    parsed = _parse(url) if url else None
    if parsed is not None:
        for key in _secret_keys(parsed):
            value = parsed.query[key]
            found.update(dict.fromkeys(value if isinstance(value, tuple) else (value,), _MASK))
        if parsed.password:
            found[parsed.password] = _MASK
    elif url:  # a libpq DSN, a URL SQLAlchemy cannot read or misreads
        found.update({m["value"].strip("'\""): _MASK for m in _KEY_VALUE.finditer(url)})
        found.update({m["pw"]: _MASK for m in _USERINFO.finditer(url)})
        with suppress(sqlalchemy.exc.ArgumentError, ValueError):
            as_read = make_url(url).host or ""  # the driver's reading: host "ss@db" of password "p@ss"
            if "@" in as_read:
                found[as_read] = f"{_MASK}@{as_read.rsplit('@', 1)[1]}"
    found.pop("", None)
    return dict(sorted(found.items(), key=lambda kv: -len(kv[0])))


def mask_secrets(text: str, url: str | None) -> str:
    """``text`` (a driver's error message, …) with every secret replaced by ``***``: the password of
    ``url`` wherever it appears (also as the host a driver read from an unescaped "@"), passwords of the
    URLs in the text, and ``password=…`` key-values."""
    for secret, shown in _secrets(url).items():
        text = text.replace(secret, shown)
    return _mask_text(_URL_IN_TEXT.sub(lambda m: mask_url(m.group()), text))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


def _first_line(exc: BaseException) -> str:
    """The first line of the driver's own message (under SQLAlchemy's and Optuna's wrappers)."""
    root = next((e for e in _chain(exc) if isinstance(e, sqlalchemy.exc.DBAPIError)), exc)
    text = str(getattr(root, "orig", None) or root).strip()
    return text.splitlines()[0] if text else type(root).__name__


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception in its chain) is a lost or refused database connection: the
    driver's connection was invalidated (a terminated backend, a restart) or an ``OperationalError``
    (cannot connect, SQLite's lock) — the failures worth retrying."""
    return any(isinstance(e, (StorageLostError, sqlalchemy.exc.OperationalError))
               or (isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated)
               for e in _chain(exc))


def storage_failed(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception in its chain) comes from the storage itself (lost connection, a
    database error), not from the work a trial does."""
    return any(isinstance(e, (StorageError, StorageInternalError, sqlalchemy.exc.SQLAlchemyError))
               or type(e).__module__.startswith(("psycopg2", "sqlite3")) for e in _chain(exc))


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
    if _stray_at(url):
        raise StorageError(f"storage {mask_url(url)} holds more than one '@'",
                           "write an '@' inside a password or parameter as %40")
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
                storage = ReconnectingStorage(_with_driver(url), mask_url(url), engine_kwargs=_engine_kwargs(url),
                                              **kwargs)  # type: ignore[arg-type]
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
    raise StorageError(f"cannot open storage {mask_url(url)}: {mask_secrets(_first_line(exc), url)}",
                       "check the URL, that the server runs and that the database exists") from None


@contextmanager
def storage_errors(url: str | None) -> Iterator[None]:
    """Turn a storage failure in the middle of work (connection lost for good, …) into one masked line,
    also when it surfaces wrapped in another exception (Optuna's bookkeeping after a failed write)."""
    try:
        yield
    except NasError:
        raise
    except Exception as exc:
        ours = next((e for e in _chain(exc) if isinstance(e, StorageError)), None)
        if ours is not None:
            raise ours from None
        if storage_failed(exc):
            raise StorageError(f"storage {mask_url(url)} failed: {mask_secrets(_first_line(exc), url)}",
                               "check the database server and retry the same command") from None
        raise


_NESTED = threading.local()  # inside a storage call of this thread: only the outermost call retries


class ReconnectingStorage(RDBStorage):
    """Optuna's RDB storage whose calls survive a lost database connection.

    Each call that opens a database session (:data:`_SESSION_CALLS`) is retried when its connection is
    lost, after the waits of :data:`RECONNECT_DELAYS`; a call nested in another is retried by the outer
    one. Once the retries are spent, :class:`StorageLostError`; the next calls then try once each until
    one succeeds (so that a worker stops promptly). A lost heartbeat is skipped, never raised: it runs
    in Optuna's heartbeat thread, and a trial that misses its heartbeats long enough is retried elsewhere.
    """

    def __init__(self, url: str, shown: str, **kwargs: Any) -> None:
        self.shown = shown
        #: Storage calls retried after a lost connection, in this process.
        self.reconnects = 0
        self._lost = False
        super().__init__(url, **kwargs)

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if getattr(_NESTED, "depth", 0):
            return method(self, *args, **kwargs)
        _NESTED.depth = 1
        try:
            for delay in (*(() if self._lost else RECONNECT_DELAYS), None):
                try:
                    result, self._lost = method(self, *args, **kwargs), False
                    return result
                except Exception as exc:
                    if not connection_lost(exc):
                        raise
                    if delay is None:
                        self._lost = True
                        raise StorageLostError(
                            f"lost the connection to storage {self.shown}: {mask_secrets(_first_line(exc), self.url)}",
                            "check that the database server runs, then rerun the same command "
                            "(an interrupted trial is retried)") from exc
                    self.reconnects += 1
                    self.remove_session()  # a fresh session on a fresh connection (pool_pre_ping)
                    time.sleep(delay * random.uniform(0.75, 1.25))
            raise AssertionError("unreachable")
        finally:
            _NESTED.depth = 0

    def record_heartbeat(self, trial_id: int) -> None:
        """Record a heartbeat; one lost through every retry is skipped (see the class notes)."""
        with suppress(StorageLostError):
            self._call(RDBStorage.record_heartbeat, trial_id)


#: The RDB storage calls that open a database session (``record_heartbeat`` is wrapped above).
_SESSION_CALLS = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies", "create_new_trial", "_create_new_trial",
    "set_trial_param", "_set_trial_param", "get_trial_param", "set_trial_state_values",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials", "_get_trials", "get_best_trial",
    "_get_best_trial_id", "_get_stale_trial_ids",
)


def _reconnecting(name: str) -> Callable[..., Any]:
    method = getattr(RDBStorage, name)

    @functools.wraps(method)
    def call(self: ReconnectingStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(method, *args, **kwargs)

    return call


for _name in _SESSION_CALLS:
    setattr(ReconnectingStorage, _name, _reconnecting(_name))


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
