"""A throwaway PostgreSQL server for the test suite: a real cluster made with ``initdb`` in a temporary directory,
started with ``pg_ctl`` on a free port of 127.0.0.1, with password (scram-sha-256) authentication over TCP.

``initdb`` refuses to run as root, so when the tests run as root every PostgreSQL program runs as an unprivileged
user (``postgres`` if that account exists, else ``nobody``) through ``runuser`` (or ``setpriv``), and the temporary
directory belongs to that user. Otherwise the programs run directly as the current user.

Databases are created and dropped with ``psql`` over the server's private unix socket (``trust`` there, the
socket directory is readable only by the server's user); clients of the tests connect over TCP with the password.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from metronome_suger.storage.postgres import extension_path

DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "postgres"
HOST = "127.0.0.1"
# Identifiers we put, unquoted-safe, into SQL and URLs alike.
DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class PostgresNotFoundError(RuntimeError):
    """No ``initdb``/``pg_ctl``/``psql`` to build the test server with."""


class PostgresServerError(RuntimeError):
    """A PostgreSQL program failed; the message carries its output (and the server log when starting)."""


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin: "15", "9.6", "17"; anything unparsable sorts last.
    parts = re.findall(r"\d+", bin_dir.parent.name)
    return tuple(int(p) for p in parts) if parts else (-1,)


def find_postgres_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: the one on PATH first, then Debian's
    ``/usr/lib/postgresql/<version>/bin``, newest version first."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        # /usr/local/bin/initdb may be a symlink into the real bin dir, which is where pg_ctl/psql also live.
        candidates += [Path(on_path).parent, Path(on_path).resolve().parent]
    candidates += sorted((Path(p) for p in glob.glob(DEBIAN_BIN_GLOB) if os.path.isdir(p)), key=_version_key,
                         reverse=True)
    for directory in candidates:
        if all(os.access(directory / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return directory
    looked = ", ".join(str(c) for c in candidates) or "nothing matched"
    raise PostgresNotFoundError(
        "PostgreSQL server binaries not found: need `initdb` and `pg_ctl` on PATH or in "
        f"{DEBIAN_BIN_GLOB} (looked at: {looked}). Install them with `scripts/ensure-postgres.sh` "
        "(what `make test` runs), e.g. Debian's `postgresql-15` package."
    )


def find_psql(bin_dir: Path) -> Path:
    for candidate in (bin_dir / "psql", bin_dir.resolve() / "psql"):
        if os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which("psql")
    if on_path:
        return Path(on_path)
    raise PostgresNotFoundError(
        f"PostgreSQL client `psql` not found (not in {bin_dir}, not on PATH); on Debian it comes with "
        "`postgresql-client-15`, which `postgresql-15` depends on."
    )


def free_port() -> int:
    """A port nobody listens on right now (the kernel picks it for a socket bound to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def attach_postgres(conn: Any, url: str, password: str, *, alias: str = "pg") -> None:
    """LOAD the postgres extension from the wheel into a DuckDB connection and ATTACH ``url`` (no password in it)
    as ``alias``; the password goes through a temporary SECRET so it never shows in errors or
    ``duckdb_databases()``."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or parts.password is not None:
        raise ValueError("expected postgresql://user@host:port/db without a password")
    conn.execute(f"LOAD {_sql_literal(str(extension_path()))}")  # the product's own lookup
    options = {
        "HOST": parts.hostname or HOST,
        "PORT": str(parts.port or 5432),
        "DATABASE": parts.path.lstrip("/"),
        "USER": parts.username or SUPERUSER,
        "PASSWORD": password,
    }
    spec = ", ".join(f"{key} {_sql_literal(value)}" for key, value in options.items())
    conn.execute(f"CREATE OR REPLACE TEMPORARY SECRET {alias}_secret (TYPE postgres, {spec})")
    conn.execute(f"ATTACH '' AS {alias} (TYPE postgres, SECRET {alias}_secret)")


class PostgresServer:
    """One throwaway PostgreSQL cluster. ``start()`` (or ``with PostgresServer() as server``) creates and starts
    it; ``stop()`` stops it and deletes its directory. Clients connect to ``host``:``port`` as ``user`` with
    ``password``; ``create_database`` returns their URL (without the password)."""

    def __init__(self, *, base_dir: str | Path | None = None, start_timeout: int = 60) -> None:
        self.bin_dir = find_postgres_bin_dir()
        self.psql = find_psql(self.bin_dir)
        self.host = HOST
        self.user = SUPERUSER
        self.password = secrets.token_urlsafe(24)
        self.port = 0
        self.start_timeout = start_timeout
        self._base_parent = str(base_dir) if base_dir is not None else None
        self.base_dir: Path | None = None
        self.running = False
        # Running as root: initdb refuses root, so every PostgreSQL program runs as an unprivileged account.
        self.run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self.run_as = _unprivileged_account()

    # --- paths -------------------------------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self._dir() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._dir() / "socket"

    @property
    def log_file(self) -> Path:
        return self._dir() / "postgres.log"

    def _dir(self) -> Path:
        if self.base_dir is None:
            raise PostgresServerError("the server has not been started")
        return self.base_dir

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> PostgresServer:
        if self.running:
            return self
        self.base_dir = Path(tempfile.mkdtemp(prefix="metronome-suger-pg-", dir=self._base_parent))
        try:
            self._initdb()
            # The port is free when picked but another process could take it before the server binds it:
            # pick again a few times rather than fail the whole session on that race.
            for attempt in range(3):
                self.port = free_port()
                result = self._pg_ctl_start()
                if result.returncode == 0:
                    break
                log = self._log_tail()
                if "could not bind" not in log or attempt == 2:
                    raise PostgresServerError(
                        f"pg_ctl start failed (exit {result.returncode}):\n{result.stdout}{result.stderr}\n"
                        f"--- {self.log_file} ---\n{log}"
                    )
            self.running = True
        except BaseException:
            self._remove_dir()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (``pg_ctl -m fast -w stop``) and delete its directory. Safe to call twice."""
        if self.base_dir is None:
            return
        try:
            if self.running:
                result = self._run(self._pg_ctl("stop", "-m", "fast", "-w", "-t", str(self.start_timeout)))
                if result.returncode != 0:
                    # Last resort so no postmaster outlives the tests; report the fast-stop failure anyway.
                    self._run(self._pg_ctl("stop", "-m", "immediate", "-w"))
                    raise PostgresServerError(f"pg_ctl stop failed:\n{result.stdout}{result.stderr}")
        finally:
            self.running = False
            self._remove_dir()

    def pause(self) -> None:
        """Stop the server but keep its cluster (a database outage); ``resume`` starts it again on the same port."""
        result = self._run(self._pg_ctl("stop", "-m", "fast", "-w", "-t", str(self.start_timeout)))
        if result.returncode != 0:
            raise PostgresServerError(f"pg_ctl stop failed:\n{result.stdout}{result.stderr}")

    def resume(self) -> None:
        result = self._pg_ctl_start()
        if result.returncode != 0:
            raise PostgresServerError(f"pg_ctl start failed:\n{result.stdout}{result.stderr}\n{self._log_tail()}")

    # --- databases ---------------------------------------------------------------------------------------------

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its URL ``postgresql://<user>@127.0.0.1:<port>/<name>``."""
        self.execute(f'CREATE DATABASE "{_check_name(name)}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` even if clients (a DuckDB connection pool) are still connected to it."""
        self.execute(f'DROP DATABASE IF EXISTS "{_check_name(name)}" WITH (FORCE)')

    def execute(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the unix socket; returns psql's unaligned, tuples-only output."""
        if not self.running:
            raise PostgresServerError("the server is not running")
        result = self._run([
            str(self.psql), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", str(self.socket_dir), "-p", str(self.port), "-U", self.user, "-d", database, "-c", sql,
        ])
        if result.returncode != 0:
            raise PostgresServerError(f"psql failed on {sql!r}:\n{result.stdout}{result.stderr}")
        return result.stdout

    # --- internals ---------------------------------------------------------------------------------------------

    def _initdb(self) -> None:
        base = self._dir()
        self.socket_dir.mkdir(mode=0o700)
        pwfile = base / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self.run_as is not None:
            for path in (base, self.socket_dir, pwfile):
                os.chown(path, self.run_as.pw_uid, self.run_as.pw_gid)
        try:
            result = self._run([
                str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user,
                "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                "--encoding=UTF8", "--no-locale", "--no-sync",
            ])
        finally:
            pwfile.unlink()
        if result.returncode != 0:
            hint = ""
            if self.run_as is not None:
                hint = (f"\n(initdb ran as {self.run_as.pw_name!r} because this process is root: every parent of "
                        f"{base} must be searchable by that user; pass base_dir= or set TMPDIR otherwise)")
            raise PostgresServerError(f"initdb failed (exit {result.returncode}):\n{result.stdout}{result.stderr}{hint}")

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        # pg_ctl hands -o to the postmaster through a shell, hence the quoting.
        options = " ".join([
            "-p", str(self.port),
            "-k", shlex.quote(str(self.socket_dir)),
            "-c", f"listen_addresses={self.host}",
            # A throwaway cluster: durability is not needed, speed is.
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ])
        return self._run(self._pg_ctl("start", "-w", "-t", str(self.start_timeout), "-o", options,
                                      "-l", str(self.log_file)))

    def _pg_ctl(self, *args: str) -> list[str]:
        return [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args]

    def _run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        if self.run_as is not None:
            command = _as_user(self.run_as, command)
        # No PG* variables from the caller's environment (PGDATA, PGPORT, PGHOST...) may redirect the tools.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        # cwd: the unprivileged user may not be able to enter the caller's working directory (e.g. /root).
        return subprocess.run(command, cwd=self._dir(), env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, check=False)

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"

    def _remove_dir(self) -> None:
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None


def _check_name(name: str) -> str:
    if not DATABASE_NAME.fullmatch(name):
        raise ValueError(f"database name must match {DATABASE_NAME.pattern}: {name!r}")
    return name


def _unprivileged_account() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresServerError("running as root but neither a `postgres` nor a `nobody` account exists to run "
                              "PostgreSQL as (initdb refuses root)")


def _as_user(account: pwd.struct_passwd, command: list[str]) -> list[str]:
    runuser = shutil.which("runuser") or ("/usr/sbin/runuser" if os.access("/usr/sbin/runuser", os.X_OK) else None)
    if runuser:
        return [runuser, "-u", account.pw_name, "--", *command]
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups", *command]
    raise PostgresNotFoundError("running as root needs `runuser` or `setpriv` (util-linux) to run PostgreSQL as "
                                f"{account.pw_name!r} (initdb refuses root)")
