"""A private PostgreSQL server for tests: Debian's initdb/pg_ctl, a data folder in a temporary
folder, listening on 127.0.0.1 and a unix socket in that folder, stopped after."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from ports import free_port


def find_bin(name: str) -> str | None:
    """The PostgreSQL program ``name`` (PATH first, then Debian's versioned folders)."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version)
    return versions[-1] if versions else None


def _version(path: str) -> float:
    try:
        return float(Path(path).parts[-3])
    except ValueError:
        return 0.0


class PostgresServer:
    """initdb + pg_ctl start on a free loopback port; :meth:`stop` removes everything.

    As root the server runs as the ``postgres`` user (initdb refuses root).
    """

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            raise FileNotFoundError("initdb/pg_ctl not found (apt-get install postgresql)")
        self.prefix: list[str] = []
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            self.user = "postgres"
            pw = pwd.getpwnam(self.user)  # KeyError without the postgres user
            self.prefix = ["runuser", "-u", self.user, "--"]
        self.root = Path(tempfile.mkdtemp(prefix="fcs-pg-"))
        self.data = self.root / "data"
        if self.prefix:
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.port = free_port()

    def _run(self, *cmd: str, timeout: float = 120) -> None:
        subprocess.run([*self.prefix, *cmd], check=True, capture_output=True, timeout=timeout)

    def start(self) -> PostgresServer:
        self._run(self.initdb, "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8")
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c max_connections=60"
        self._run(self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"),
                  "-w", "-t", "60", "start")  # fmt: skip
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(
                self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60
            )
        except (subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(self.root, ignore_errors=True)
