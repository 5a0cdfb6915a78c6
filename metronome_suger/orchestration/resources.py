"""Dagster resources: thin holders of settings that build the plain clients and DuckDB connections.

Tokens arrive as ``dg.EnvVar`` values, resolved when a run starts, so they never enter definition
snapshots, the UI or metadata; definitions load without them.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field, SecretStr

from metronome_suger.clients.metronome import MetronomeClient
from metronome_suger.clients.suger import SugerClient
from metronome_suger.config import HttpSettings
from metronome_suger.core.windows import utc
from metronome_suger.storage.db import Database, connect


class _ApiResource(dg.ConfigurableResource):
    """What both API resources share: the bound on concurrent calls, and the configuration's ``http`` section."""

    max_workers: int = Field(default=8, description="Bound on concurrent calls")
    http: dict[str, Any] = Field(default_factory=dict, description="The configuration's http section "
                                 "(timeout_seconds, max_attempts...); empty: the defaults")

    def _options(self) -> dict[str, Any]:
        return HttpSettings.model_validate(self.http).client_options()


class MetronomeResource(_ApiResource):
    """Metronome API access (``Authorization: Bearer``)."""

    base_url: str = Field(description="Metronome API base URL")
    api_token: str = Field(description="Metronome API token; pass dg.EnvVar(<name>)", repr=False)

    def get_client(self) -> MetronomeClient:
        return MetronomeClient(self.base_url, self.api_token, max_workers=self.max_workers, **self._options())


class SugerResource(_ApiResource):
    """Suger API access (``Authorization: Key``) for one organization."""

    base_url: str = Field(description="Suger API base URL")
    org_id: str = Field(description="Suger organization id")
    api_key: str = Field(description="Suger API key; pass dg.EnvVar(<name>)", repr=False)

    def get_client(self) -> SugerClient:
        return SugerClient(self.base_url, self.org_id, self.api_key, **self._options())


class SafeDuckDBResource(DuckDBResource):
    """``DuckDBResource`` that always closes its connection (the upstream one leaks the file lock
    when the block raises), can open read-only for readers, and bounds the wait for the file lock.
    ``database`` is a DuckDB file or a ``postgresql://`` URL (the ledger on PostgreSQL, through DuckDB)."""

    read_only: bool = Field(default=False, description="Open the file read-only")
    lock_timeout: float = Field(default=120.0, description="Seconds to wait for another process's file lock")
    password: str | None = Field(default=None, description="PostgreSQL password; pass dg.EnvVar(<name>)",
                                 repr=False)

    @property
    def target(self) -> Database:
        return Database(self.database, SecretStr(self.password) if self.password else None)

    @contextmanager
    def get_connection(  # type: ignore[override]
        self, read_only: bool | None = None, lock_timeout: float | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        with connect(self.target, read_only=self.read_only if read_only is None else read_only,
                     lock_timeout=self.lock_timeout if lock_timeout is None else lock_timeout) as conn:
            yield conn

    def exists(self) -> bool:
        """Whether anything ran yet (sensors skip instead of creating an empty database)."""
        if not self.target.is_postgres:
            return Path(self.database).exists()
        with self.get_connection(read_only=True) as conn:
            return bool(conn.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                                     "AND table_name = 'schema_version'").fetchall()[0][0])


class ClockResource(dg.ConfigurableResource):
    """The time the pipeline believes it is: real UTC time unless frozen (tests, replays)."""

    frozen_at: str | None = Field(default=None, description="ISO-8601 instant to use instead of now")

    def now(self) -> datetime:
        if self.frozen_at:
            return utc(datetime.fromisoformat(self.frozen_at.replace("Z", "+00:00")))
        return datetime.now(timezone.utc)
