"""Deterministic record-group ids: the same usage always gets the same id, so Suger's 409 dedups re-runs."""

import uuid
from datetime import datetime

from metronome_suger.core.windows import iso

# Fixed namespace for this project's uuid5 ids; changing it would re-send every group ever reported.
NAMESPACE = uuid.UUID("6d3c2b0e-8f1a-5c4e-9b7d-2a1f0e9c8b70")


def record_group_id(
    org_id: str, entitlement_id: str, billing_mode: str, window_start: datetime, revision: int
) -> str:
    """UUIDv5 of (org, entitlement, billing mode, window start, revision); 36 chars, as Suger allows."""
    if revision < 0:
        raise ValueError(f"revision must be >= 0, got {revision}")
    name = "|".join((org_id, entitlement_id, billing_mode, iso(window_start), str(revision)))
    return str(uuid.uuid5(NAMESPACE, name))
