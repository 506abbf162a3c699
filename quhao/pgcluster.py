"""A throwaway PostgreSQL cluster (tests, benchmarks): initdb + pg_ctl in a folder.

Debian's server binaries live in /usr/lib/postgresql/<version>/bin (not on PATH). initdb
refuses to run as root, so as root the cluster belongs to `nobody` (the folder is handed
to it — made under /tmp if `nobody` could not reach the one asked for — and every
server command runs through `runuser`). The server listens on a free
loopback port and on a unix socket in the folder; `dsn` connects as the superuser of the
cluster (the user who made it), trust authentication, so nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from quhao.broker import free_port

UNPRIVILEGED = "nobody"


def bindir() -> Path:
    """Where initdb and pg_ctl are: pg_config's answer, else the newest Debian version."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if not found:
        raise FileNotFoundError("PostgreSQL's initdb is not installed (make deps installs it)")
    return Path(found[-1]).parent


def _reachable_by_others(folder: Path) -> bool:
    """Whether every existing ancestor of folder lets other users through."""
    for parent in folder.resolve().parents:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            return False
    return True


class PgCluster:
    """A private PostgreSQL server, stopped (and its folder removed) on close()."""

    def __init__(self, folder: str | Path | None = None, *, fsync: bool = True) -> None:
        self.bin = bindir()
        if os.geteuid() == 0 and folder is not None and not _reachable_by_others(Path(folder)):
            folder = None  # e.g. pytest's 0700 temp dirs: `nobody` could not get in
        self.dir = Path(folder or tempfile.mkdtemp(prefix="quhao-pg-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data = self.dir / "data"
        self.port = free_port()
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            self.user = UNPRIVILEGED
            entry = pwd.getpwnam(UNPRIVILEGED)
            os.chmod(self.dir, 0o755)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        )
        settings = [
            f"port = {self.port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.dir}'",
            "max_connections = 50",
            "shared_buffers = 128MB",
            f"fsync = {'on' if fsync else 'off'}",
            "log_min_messages = warning",
        ]
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n".join(settings) + "\n")
        self.log_path = self.dir / "postgres.log"
        self.start()

    def _run(self, args: list[str]) -> None:
        if os.geteuid() == 0:
            args = ["runuser", "-u", UNPRIVILEGED, "--", *args]
        result = subprocess.run(args, capture_output=True, text=True, cwd=self.dir)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> None:
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.dir} port={self.port} user={self.user} dbname={dbname}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # a name we chose, not user input
        return self.dsn(name)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
