"""A throwaway PostgreSQL server for tests (Debian's initdb + pg_ctl), optionally with a
password, used by the PostgreSQL tests."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def postgres_server(password: str | None = None) -> Iterator[dict]:
    """Start a cluster with database `sweep`; yield host, port, user, password, url (no pw).

    With ``password``, the server requires it (scram-sha-256) for TCP connections.
    """
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL binaries not found (/usr/lib/postgresql/*/bin/initdb)")
    bindir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="vae-sweep-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' OS user to own the cluster")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    pg_ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data)]
    init = [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres"]
    if password:
        pwfile = root / "pw"
        pwfile.write_text(password + "\n")
        if as_user:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        init += ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
    else:
        init += ["-A", "trust"]
    subprocess.run(init, check=True, capture_output=True)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"

    def start() -> None:
        subprocess.run(
            [*pg_ctl, "-l", str(root / "server.log"), "-w", "-o", options, "start"],
            check=True,
            capture_output=True,
        )

    def stop() -> None:  # an outage: connections are cut, the data stays
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], check=True, capture_output=True)

    start()
    try:
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=port, user="postgres", password=password
        )
        connection.autocommit = True
        connection.cursor().execute("CREATE DATABASE sweep")
        connection.close()
        yield {
            "host": "127.0.0.1",
            "port": port,
            "user": "postgres",
            "password": password,
            "url": f"postgresql://postgres@127.0.0.1:{port}/sweep",
            "stop": stop,
            "start": start,
        }
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
