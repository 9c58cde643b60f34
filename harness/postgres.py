"""A throwaway PostgreSQL cluster: initdb in a temporary folder, one server on a loopback port.

The server binaries come from the distribution's packages (`.ci/run` installs
them when missing). initdb refuses to run as root, so under root the cluster
belongs to the `postgres` account the package creates.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from kling3_tools.adapters.store.pg_schema import migrate

from .helpers import free_port


def find_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    candidates = [str(Path(found).resolve().parent)] if found else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for folder in candidates:
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


class PostgresCluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="kling3-pg-"))
        self.data = self.root / "data"
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([str(self.bindir / tool), *args], check=True, capture_output=True, cwd=self.root, **self._run_as)

    def start(self) -> PostgresCluster:
        self._run("initdb", "-D", str(self.data), "-U", "kling3", "-A", "trust", "-E", "UTF8", "--locale=C", "-N")
        self._launch()
        return self

    def _launch(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=300 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options, "-w", "start")

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """The server stopped (every connection refused) while inside; started again on the way out."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        try:
            yield
        finally:
            self._launch()

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every connection is cut, as in an operator's restart or a failover."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-m", "fast", "-w", "restart")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://kling3@127.0.0.1:{self.port}/{dbname}"

    def role_with_password(self, name: str, password: str) -> None:
        """A role that must give `password` (SCRAM) to connect from loopback; every other role stays trusted."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                    psycopg.sql.Identifier(name), psycopg.sql.Literal(password)
                )
            )
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"host all {name} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())  # the first match wins
        self._run("pg_ctl", "-D", str(self.data), "reload")

    def new_database(self) -> str:
        """A fresh, empty database; its url."""
        name = f"kling3_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
        return self.url(name)

    def migrated_database(self) -> str:
        """A fresh database with the project's schema; its url."""
        url = self.new_database()
        asyncio.run(migrate(url))
        return url
