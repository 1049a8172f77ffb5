"""Study storages: where a sweep's trials live, and opening them safely.

Storage URLs: anything Optuna's RDBStorage takes (sqlite:///..., postgresql://..., mysql://...)
or a journal file (`journal:///abs/path.log`, or any path ending in `.log`). RDB storages get
Optuna's heartbeat, so a dead worker's RUNNING trial is failed and re-enqueued by
`RetryHeartbeatStaleTrialCallback`; journal files have no heartbeat, so `heartbeat.py` does it.
PostgreSQL and MySQL storages ride out short server outages (`RetryingRDBStorage`); a 0-byte
SQLite file is refused, never silently restarted (`check_sqlite_file`).
"""

from __future__ import annotations

import importlib.util
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from harness.secrets import mask_text, with_env_password
from harness.sweep.recovery import repair_journal
from harness.sweep.retry import retry_callback
from harness.sweep.settings import SweepConfigError, SweepSettings


def default_storage(results_dir: Path | str) -> str:
    """The default storage URL: one SQLite file for all studies under `results_dir`.

    ``%``, ``?`` and ``#`` in the path are percent-encoded: unencoded, SQLAlchemy would read
    ``results?x/optuna.db`` as the file ``results`` with a query string.
    """
    from urllib.parse import quote

    path = str((Path(results_dir) / "optuna.db").resolve())
    return f"sqlite:///{quote(path, safe='/:@!$&()*+,;=~ ')}"


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///`` URL (query string dropped, percent-encoding decoded)."""
    from urllib.parse import unquote

    return Path(unquote(url[len("sqlite:///") :].split("?", 1)[0]))


# A SQLite study file of 0 bytes, older than this, is a cut-off write, not one being created.
EMPTY_DB_GRACE_SECONDS = 30.0


def check_sqlite_file(path: Path) -> None:
    """Refuse a 0-byte SQLite study file (a cut-off write or a full disk): opening it would
    silently start every study anew and later overwrite the old exports.

    Raises:
        SweepConfigError: naming the file and the two ways out.
    """
    try:
        info = path.stat()
    except OSError:
        return
    if info.st_size:
        return
    for side in ("-wal", "-journal"):  # in WAL mode the data may sit in the -wal file
        other = path.with_name(path.name + side)
        if other.exists() and other.stat().st_size:
            return
    if time.time() - info.st_mtime < EMPTY_DB_GRACE_SECONDS:
        return  # another process is creating it right now
    raise SweepConfigError(
        f"{path} is empty (0 bytes): a write to it was cut off (a kill or a full disk), so "
        "its studies are lost or were never written. Restore it from a backup, or delete it "
        f"(rm {path}) to start the studies anew; it is not reused silently."
    )


def is_journal_url(url: str) -> bool:
    """True for `journal:///path` URLs and plain paths ending in `.log`."""
    return url.startswith("journal:") or ("://" not in url and url.endswith(".log"))


def journal_path(url: str) -> Path:
    """The file behind a journal storage URL (`journal:///abs/x.log` or `x.log`)."""
    if url.startswith("journal:"):
        url = url[len("journal:") :]
        url = url[2:] if url.startswith("//") else url
    return Path(url).expanduser().resolve()


def resolve_storage_url(settings: SweepSettings, results_dir: Path | str) -> str:
    """The storage URL this sweep uses, refusing storage-coordinated workers on SQLite.

    The default ("pool" coordination) has one process writing the study, so SQLite is safe
    with any number of workers; only `sweep.coordination=storage` lets several processes write.

    Raises:
        SweepConfigError: `coordination=storage` with more than one worker on SQLite (Optuna's
            FAQ advises against concurrent SQLite writers; we refuse rather than silently switch
            storages, so the report and later runs keep finding the study where they expect it).
    """
    url = settings.storage or default_storage(results_dir)
    if settings.coordination == "storage" and url.startswith("sqlite"):
        n_workers = settings.worker_layout().n_workers
        if n_workers > 1:
            log_file = Path(results_dir).resolve() / "optuna-journal.log"
            raise SweepConfigError(
                f"sweep.n_workers={settings.n_workers} ({n_workers} workers) with "
                f"sweep.coordination=storage is refused with SQLite storage ({url}): several "
                "processes would write one SQLite file. Storages that can be shared: a journal "
                f"file (sweep.storage=journal://{log_file}, one machine or a shared filesystem) "
                "and PostgreSQL/MySQL (sweep.storage=postgresql://user@host/db, several "
                "machines). Or drop sweep.coordination=storage: the default pool coordination "
                "runs parallel workers on SQLite safely."
            )
    return url


def open_storage(
    url: str, settings: SweepSettings | None = None, *, read_only: bool = False
) -> BaseStorage:
    """Open (and create if needed) the storage; fail fast when it cannot be reached.

    Args:
        url: Storage URL (see module docstring). A PostgreSQL/MySQL URL without a password
            takes it from VAE_SWEEP_DB_PASSWORD (or libpq's PGPASSWORD / ~/.pgpass).
        settings: Heartbeat settings for RDB storages; None = no heartbeat (read-only use).
        read_only: Reading only (reports, benchmarks): a SQLite file in a folder we cannot
            write (an archive) is opened immutable instead of failing on its WAL files.

    Raises:
        SweepConfigError: Naming `sweep.storage` (password hidden) and what to check.
    """
    if is_journal_url(url):
        path = journal_path(url)
        try:
            if read_only and path.exists() and not _writable(path):
                path = _temp_copy(path)  # an archive: Optuna opens journals for appending
            path.parent.mkdir(parents=True, exist_ok=True)
            repair_journal(path)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as error:
            raise SweepConfigError(
                f"sweep.storage={url}: cannot open the journal file ({error}); use a writable path."
            ) from None
    kwargs: dict[str, Any] = {}
    if settings is not None:
        kwargs = {
            "heartbeat_interval": settings.heartbeat_interval,
            "grace_period": settings.effective_grace_period,
            "heartbeat_stale_trial_callback": retry_callback(settings.max_retry),
        }
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith(("postgresql", "mysql")):
        # Without a timeout an unreachable host hangs for minutes before any error.
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        if url.startswith("sqlite:///"):
            path = sqlite_path(url)
            check_sqlite_file(path)
            if read_only and path.exists() and not _writable(path):
                return _read_only_sqlite(path)
            path.parent.mkdir(parents=True, exist_ok=True)
        retry = settings.db_retry_seconds if settings is not None else 60.0
        return _rdb_storage(with_env_password(url), engine_kwargs, kwargs, retry)
    except SweepConfigError:
        raise
    except Exception as error:  # sqlalchemy/driver errors have no common base we can rely on
        detail = str(error).splitlines()[0] if str(error) else ""
        if url.startswith("sqlite:///") and _disk_full(sqlite_path(url).parent):
            raise SweepConfigError(
                f"sweep.storage={hide_password(url)}: cannot open the study file ({detail}): "
                "no space left on the device. Free some space and rerun the same command "
                "(finished trials are kept)."
            ) from None
        raise SweepConfigError(
            f"sweep.storage={hide_password(url)}: cannot connect ({type(error).__name__}: "
            f"{hide_password(detail)}). {_connect_hint(url)}"
        ) from None


def _disk_full(folder: Path, reserve: int = 1 << 20) -> bool:
    """True when the file system of ``folder`` has less than ``reserve`` bytes free."""
    import shutil

    try:
        return shutil.disk_usage(folder).free < reserve
    except OSError:
        return False


def _connect_hint(url: str) -> str:
    """What to check when a storage cannot be opened, fitting the URL's scheme."""
    scheme = url.split(":", 1)[0].split("+")[0]
    if scheme == "sqlite":
        return (
            "Check that the file's folder exists and is writable (and not on a network "
            "filesystem), or leave sweep.storage null for the SQLite file under results/."
        )
    try:
        from sqlalchemy.engine import make_url

        database = make_url(url).database or "<db>"
    except Exception:
        database = "<db>"
    if scheme in ("postgresql", "postgres"):
        create = f"`createdb {database}` on the server"
    elif scheme in ("mysql", "mariadb"):
        create = f"`CREATE DATABASE {database};` in the mysql client"
    else:
        create = "your database's own tools"
    return (
        "Check the URL scheme, host, port and credentials (the password may come from "
        f"VAE_SWEEP_DB_PASSWORD, PGPASSWORD or ~/.pgpass) and that the database exists "
        f"(create it with {create}), or leave sweep.storage null for the SQLite file under "
        "results/."
    )


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _temp_copy(path: Path, *extra: Path) -> Path:
    """Copy ``path`` (and ``extra`` files beside it) to a temp folder removed at exit."""
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="vae-sweep-ro-"))
    atexit.register(shutil.rmtree, folder, True)
    for source in (path, *extra):
        shutil.copyfile(source, folder / source.name)
    return folder / path.name


def _read_only_sqlite(path: Path) -> RDBStorage:
    """An archived SQLite study file (read-only file or folder), opened without writing.

    `immutable=1` tells SQLite that nothing changes the file, so it needs no lock and no -shm
    file. A WAL file left by a killed writer holds commits not yet in the file, which an
    immutable open would ignore: then the file and its WAL are copied to a temp folder first.
    """
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size:
        uri = f"sqlite:///{_temp_copy(path, wal)}"
    else:
        from urllib.parse import quote

        uri = f"sqlite:///file:{quote(str(path.resolve()))}?mode=ro&immutable=1&uri=true"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(uri, skip_table_creation=True, skip_compatibility_check=True)


def _with_installed_driver(url: str) -> str:
    """`postgresql://` -> `postgresql+psycopg2://` when only psycopg2 is installed.

    SQLAlchemy 2.1 made psycopg (3) the default PostgreSQL driver; the harness depends on
    psycopg2-binary, and users should not need to know the `+driver` URL syntax.
    """
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def _connection_lost(error: BaseException) -> bool:
    """True when ``error`` (or its cause) says the database server can't be reached now."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return True
        if type(seen).__name__ in ("OperationalError", "InterfaceError") and type(
            seen
        ).__module__.startswith(("psycopg", "pymysql", "MySQLdb")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class RetryingRDBStorage(RDBStorage):
    """An RDBStorage (PostgreSQL/MySQL) that rides out short server outages.

    Every storage call that fails because the connection was lost is retried with backoff
    (0.5 s doubling to 10 s) for up to ``retry_seconds`` (`sweep.db_retry_seconds`); a
    warning says so once per outage. Longer outages raise the last error.
    """

    retry_seconds: float = 60.0

    def _retrying(self, name: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        start, delay, warned = time.monotonic(), 0.5, False
        while True:
            try:
                result = call(*args, **kwargs)
            except Exception as error:
                if not _connection_lost(error):
                    raise
                waited = time.monotonic() - start
                if waited + delay > self.retry_seconds:
                    raise
                if not warned:
                    warned = True
                    import logging

                    logging.getLogger("harness.sweep").warning(
                        "the study database stopped answering (%s); retrying for up to %g s "
                        "(sweep.db_retry_seconds)",
                        type(error).__name__,
                        self.retry_seconds,
                    )
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if warned:
                import logging

                logging.getLogger("harness.sweep").warning(
                    "the study database answers again after %.0f s", time.monotonic() - start
                )
            return result


def _retry_wrapper(name: str) -> Any:
    method = getattr(RDBStorage, name)

    def call(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self._retrying(name, method, self, *args, **kwargs)

    call.__name__ = name
    call.__doc__ = method.__doc__
    return call


# The private ones: Optuna's cache in front of an RDBStorage calls them directly.
from harness.compat.optuna import RDB_PRIVATE_CALLS  # noqa: E402

for _name in dir(RDBStorage):
    if (
        (_name.startswith("_") and _name not in RDB_PRIVATE_CALLS)
        or _name in ("remove_session", "upgrade")
        or _name.endswith("_version")
        or _name.endswith("_versions")
    ):
        continue
    if callable(getattr(RDBStorage, _name, None)):
        setattr(RetryingRDBStorage, _name, _retry_wrapper(_name))


def _rdb_storage(
    url: str, engine_kwargs: dict, kwargs: dict, retry_seconds: float = 60.0
) -> RDBStorage:
    url = _with_installed_driver(url)
    server = url.startswith(("postgresql", "mysql"))

    def RDBStorage(url: str, **options: Any) -> Any:  # noqa: N802 (the class it stands for)
        if not server:
            return optuna.storages.RDBStorage(url, **options)
        storage = RetryingRDBStorage(url, **options)
        storage.retry_seconds = float(retry_seconds)
        return storage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)

        def open_once() -> RDBStorage:
            storage = RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
            if url.startswith("sqlite"):
                _use_sqlite_wal(storage)
            return storage

        # Workers (or a sweep and a report, or a job array) started together on a fresh
        # database race to create Optuna's tables; a loser tries again a moment later, when
        # the tables exist. The last of 4 attempts raises whatever it meets.
        for attempt in range(3):
            try:
                return open_once()
            except Exception as error:
                # Another process created them first: the alembic_version row, "relation ...
                # already exists" (PostgreSQL), "table ... already exists" (SQLite)
                text = str(error).lower()
                race = type(error).__name__ in ("IntegrityError", "ProgrammingError") or any(
                    t in text for t in ("already exists", "database is locked")
                )
                if not (race or (server and attempt == 0)):
                    raise
                time.sleep((1.0 + random.random()) * (attempt + 1))
        return open_once()


def _use_sqlite_wal(storage: RDBStorage) -> None:
    """Write-ahead log + synchronous=NORMAL: ~10x cheaper commits (a trial makes ~30).

    Still safe against a killed process (kill -9 loses nothing committed); a power cut may lose
    the last commits but cannot corrupt the file. WAL needs a local filesystem, as SQLite's
    locking does anyway: on shared filesystems use a journal file or PostgreSQL.
    """

    def on_connect(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # connections opened while creating the tables lack the pragmas


def hide_password(url: str) -> str:
    """``url`` with its password (and anything secret-looking) masked, for messages and logs."""
    try:
        from sqlalchemy.engine import make_url

        return mask_text(make_url(url).render_as_string(hide_password=True))
    except Exception:  # an unparseable URL: mask what looks like a password
        return mask_text(url)
