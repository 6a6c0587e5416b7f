"""Where a study lives, and the lock that keeps its trial budget exact.

SQLite (``sqlite:///runs/<name>/sweep.db``, the default) serves the workers of one
machine; PostgreSQL (``postgresql://user@host/db``) serves workers on many machines;
``memory`` keeps the study in this process only (one worker, gone when it ends).
Trials run under Optuna's heartbeat: a trial whose worker stopped beating for
``grace_period`` seconds (a killed process, a lost machine) is marked FAILED by the next
worker that starts a trial, or by ``neuralab sweep status``, never left RUNNING.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning

from neuralab.errors import UserError

MEMORY = "memory"


def default_storage(name: str) -> str:
    return f"sqlite:///runs/{name}/sweep.db"


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    if url == MEMORY:
        return url
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def check_url(url: str) -> None:
    if url != MEMORY and not url.startswith(("sqlite:///", "postgresql://", "postgresql+")):
        raise UserError(
            f"--storage {shown(url)!r} is not supported; give sqlite:///PATH, "
            "postgresql://user@host/db or memory"
        )


def engine_url(url: str) -> str:
    """Plain ``postgresql://`` means psycopg2, the driver of the ``sweep`` extra (SQLAlchemy
    2.1 would pick psycopg 3); an explicit ``postgresql+driver://`` is kept."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def open_storage(
    url: str, heartbeat_interval: int | None = None, grace_period: int | None = None
) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; with a heartbeat when ``heartbeat_interval`` is given.

    A database that cannot be reached is a one-line UserError.
    """
    check_url(url)
    if url == MEMORY:
        return optuna.storages.InMemoryStorage()
    path = sqlite_path(url)
    engine_kwargs = {}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # wait for other workers' writes
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeat_interval
            return optuna.storages.RDBStorage(
                engine_url(url),
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
            )
    except ImportError:
        raise UserError(
            f"no database driver for {shown(url)}; install it with: pip install 'neuralab[sweep]'"
        ) from None
    except (sqlalchemy.exc.OperationalError, optuna.exceptions.StorageInternalError) as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise UserError(f"cannot open sweep storage {shown(url)}: {reason}") from None


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark RUNNING trials whose heartbeat stopped more than the grace period ago as FAILED."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@contextlib.contextmanager
def budget_lock(url: str, name: str) -> Iterator[None]:
    """Held while a worker counts the study's trials and reserves the next one, so that
    workers never run more trials together than asked: a file lock beside an SQLite
    database (its workers share one machine), an advisory lock in PostgreSQL."""
    path = sqlite_path(url)
    if path is not None:
        with open(path.with_name(path.name + ".lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
    elif url == MEMORY:
        yield
    else:
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        engine = sqlalchemy.create_engine(engine_url(url), poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        finally:
            engine.dispose()
