"""Optuna storages from the URL of ``--storage``, opened with a bounded wait and one-line errors.

Three forms are accepted:

* ``sqlite:///path/study.db`` (the default: the run's own ``study.db``);
* any other SQLAlchemy URL, e.g. ``postgresql://user:pass@host:5432/db`` for several drivers on
  several machines (the ``psycopg`` driver is a dependency; ``postgresql://`` and
  ``postgres://`` are read as ``postgresql+psycopg://``);
* Optuna's journal file storage, for a shared file system without a database server:
  ``journal:///abs/path/study.log``, ``journal://relative/path.log``, or a plain path ending in
  ``.log``.

Drivers that start together may create the study's tables at the same moment; creation is
retried, so that each of them ends up using the one set of tables.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import optuna

from fcasearch.search.options import SearchError

__all__ = [
    "CONNECT_TIMEOUT_S",
    "StorageError",
    "is_journal",
    "make_storage",
    "read_error",
    "redact",
    "sqlalchemy_url",
]

CONNECT_TIMEOUT_S = 10  # s: how long a database server may take to answer a connection
_CREATE_ATTEMPTS = 6


class StorageError(SearchError):
    """The storage URL cannot be opened; the message names the URL and what to check."""


def read_error(storage: str, study_name: str, exc: BaseException) -> StorageError:
    """The one-line error for a storage that failed while a study was read (its database's
    first line, the URL without its password)."""
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""]
    return StorageError(
        f"storage {redact(storage)}: cannot read study {study_name!r} "
        f"({type(exc).__name__}: {first[0]})"
    )


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _password = creds.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


def is_journal(url: str) -> bool:
    """Whether ``url`` names an Optuna journal file (``journal://...`` or ``*.log``)."""
    return url.startswith("journal://") or ("://" not in url and url.endswith(".log"))


def _journal_path(url: str) -> Path:
    raw = url[len("journal://") :] if url.startswith("journal://") else url
    if not raw:
        raise StorageError(f"storage {url!r}: give a file, e.g. journal:///shared/study.log")
    return Path(raw).expanduser()


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy URL for ``url``: PostgreSQL URLs without a driver get ``psycopg``."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _hint(url: str) -> str:
    if url.startswith(("postgresql", "postgres")):
        return (
            "check that the server is running and reachable from this machine, the host, port, "
            "database name, user and password, and that the database exists (createdb NAME)"
        )
    if url.startswith("sqlite"):
        return (
            "check that the folder exists and is writable, and that the file is a SQLite database"
        )
    return "check the URL's form (sqlite:///FILE, postgresql://USER:PASS@HOST:PORT/DB, journal:///FILE.log)"


def _journal_storage(url: str) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = _journal_path(url)
    if not path.parent.is_dir():
        raise StorageError(
            f"storage {url!r}: folder {path.parent} does not exist; create it (on a file system "
            "every driver can reach) or choose another journal file"
        )
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except (OSError, ValueError) as exc:
        raise StorageError(
            f"storage {url!r}: cannot open the journal file ({type(exc).__name__}: {exc})"
        ) from None


def _rdb_storage(url: str) -> optuna.storages.BaseStorage:
    import sqlalchemy.exc

    engine_kwargs = {}
    target = sqlalchemy_url(url)
    if target.startswith("postgresql"):
        engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(target, engine_kwargs=engine_kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            # another driver is creating the same tables right now: use them once they exist
            if attempt == _CREATE_ATTEMPTS - 1:
                raise StorageError(
                    f"storage {redact(url)}: creating Optuna's tables kept colliding with another "
                    f"process ({type(exc).__name__}); start again"
                ) from None
            time.sleep(0.2 + random.random() * 0.8)
        except (ImportError, sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError) as exc:
            raise StorageError(
                f"storage {redact(url)}: not a usable database URL ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0]}); {_hint(url)}"
            ) from None
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            raise StorageError(
                f"storage {redact(url)}: cannot open it ({type(exc).__name__}: "
                f"{first[0] if first else ''}); {_hint(url)}"
            ) from None
    raise AssertionError("unreachable")


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage of ``url`` (see the module doc for the forms).

    SQLite gets write-ahead logging with ``synchronous=NORMAL``: a commit no longer waits for an
    fsync (Optuna commits once per suggested parameter, ~12 ms each on this disk otherwise), and a
    killed process still loses no committed trial (only a power cut could).

    Raises:
        StorageError: the URL is malformed, names a driver that is not installed, or its server
            does not answer within :data:`CONNECT_TIMEOUT_S` seconds.
    """
    if is_journal(url):
        return _journal_storage(url)
    if "://" not in url:
        raise StorageError(
            f"storage {url!r}: not a URL; {_hint(url)} (a journal file must end in .log)"
        )
    if url.startswith("sqlite:///"):
        folder = Path(url[len("sqlite:///") :]).parent
        if not folder.is_dir():
            raise StorageError(f"storage {url}: folder {folder} does not exist; {_hint(url)}")
    storage = _rdb_storage(url)
    if url.startswith("sqlite"):
        from sqlalchemy import event

        def _pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        event.listen(storage.engine, "connect", _pragmas)
        storage.engine.dispose()  # reconnect, so every pooled connection has the pragmas
    return storage
