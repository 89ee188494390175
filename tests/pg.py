"""A throwaway PostgreSQL server for the tests (Debian's ``postgresql`` package + psycopg 3).

Import the fixtures into a test module (``from pg import pg_server, pg_url  # noqa: F401``):

- ``pg_server`` (session): one cluster made with ``initdb`` in a fresh folder (in /dev/shm
  when it has room, else the temp dir), listening only on a Unix socket there (no TCP),
  started with ``pg_ctl`` and stopped, with its folder removed, when the session ends.
  Durability settings are off (fsync, full-page writes): the data is thrown away anyway and
  the start stays fast (well under a second to a few seconds on a busy machine).
- ``pg_url`` (per test): the SQLAlchemy URL of a new, empty database on that server.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` system user
(which Debian's package creates) through ``runuser``. Both fixtures skip, saying why, when
the server binaries or the psycopg driver are missing.
"""
from __future__ import annotations

import glob
import importlib.util
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "pg_server", "pg_url", "find_pg_bindir"]

PORT = 5432  # only names the socket file: the server listens on no TCP port
SUPERUSER = "postgres"


def find_pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb, pg_ctl and postgres
    (Debian's layout), else the folder of an ``initdb`` on PATH, else None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parent.name.split(".")],
                        reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for folder in candidates:
        if all(os.access(Path(folder) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


class PostgresServer:
    """One PostgreSQL cluster in ``base`` (data in ``base/data``, socket in ``base``)."""

    def __init__(self, bindir: Path, base: Path, run_as: str | None):
        self.bindir, self.base, self.run_as = bindir, base, run_as
        self.data = base / "data"
        self.log = base / "server.log"
        self.started = False
        self.start_seconds = float("nan")
        self._names = itertools.count(1)

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bindir / tool), *args]
        return ["runuser", "-u", self.run_as, "--", *command] if self.run_as else command

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(self._command(tool, *args), cwd=self.base, capture_output=True,
                                text=True, timeout=timeout, env={**os.environ, "LC_ALL": "C"})
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): "
                               f"{(result.stderr or result.stdout).strip()[-2000:]}\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return "server log:\n" + self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def start(self) -> "PostgresServer":
        """initdb, then pg_ctl start (waits until it accepts connections)."""
        began = time.perf_counter()
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                  "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")
        settings = {"listen_addresses": "''", "unix_socket_directories": f"'{self.base}'",
                    "port": str(PORT), "fsync": "off", "synchronous_commit": "off",
                    "full_page_writes": "off", "max_connections": "100",
                    "shared_buffers": "32MB", "logging_collector": "off"}
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# gameqa tests\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
        self.started = True  # from here on, stop() must run even if the start fails
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        self.start_seconds = time.perf_counter() - began
        return self

    def stop(self) -> None:
        """pg_ctl stop (fast); SIGKILL the postmaster if that fails; remove the folder."""
        try:
            if self.started:
                try:
                    self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
                except (RuntimeError, subprocess.TimeoutExpired):
                    self._kill_postmaster()
        finally:
            self.started = False
            shutil.rmtree(self.base, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            os.kill(pid, signal.SIGKILL)  # its backends exit when they see the postmaster gone
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database`` over the Unix socket (psycopg 3 driver)."""
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.base}&port={PORT}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"{prefix}{next(self._names)}"
        with psycopg.connect(host=str(self.base), port=PORT, user=SUPERUSER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _server_user() -> str | None:
    """None to run the server as ourselves; the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' system user to run PostgreSQL "
                    "as (apt-get install postgresql creates it)")
    if not shutil.which("runuser"):
        pytest.skip("running as root and runuser (util-linux) is missing to start PostgreSQL "
                    "as the 'postgres' user")
    return "postgres"


def _scratch_parent() -> str:
    """/dev/shm when it is a tmpfs with 1 GiB free (initdb and the final clean-up are much
    faster in memory than on a busy disk), else the usual temp folder."""
    try:
        stats = os.statvfs("/dev/shm")
        if os.access("/dev/shm", os.W_OK) and stats.f_bavail * stats.f_frsize >= 1 << 30:
            return "/dev/shm"
    except OSError:
        pass
    return tempfile.gettempdir()


@pytest.fixture(scope="session")
def pg_server():
    """A running throwaway PostgreSQL server for the session (see the module docstring)."""
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("the psycopg driver is not installed (pip install 'psycopg[binary]')")
    bindir = find_pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found "
                    "(apt-get install postgresql)")
    run_as = _server_user()
    # a short path (the socket path must fit in 107 bytes), in memory where there is room
    base = Path(tempfile.mkdtemp(prefix="gameqa-pg-", dir=_scratch_parent()))
    if run_as:
        entry = pwd.getpwnam(run_as)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    base.chmod(0o755)  # the socket must be reachable by this (test) user
    server = PostgresServer(bindir, base, run_as)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture()
def pg_url(pg_server) -> str:
    """The SQLAlchemy URL of a fresh, empty database on the session's PostgreSQL server."""
    return pg_server.create_database()
