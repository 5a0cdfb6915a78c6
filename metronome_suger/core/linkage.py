"""Customer linkage as Suger does it. Pure: the caller lists buyers and entitlements.

A Metronome customer is linked to the entitlements of the Suger buyer whose
``info.metronomeCustomerId`` names it; ``overrides`` (``customer_links`` in the configuration) replace
the buyer-derived links of the customers they name.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

USABLE_STATUSES = ("ACTIVE", "PENDING_CANCEL")  # entitlements that usage is reported to
# Ended entitlements still take the usage generated before their end (cancellation) time, while their
# marketplace accepts it (AWS: metering within 1 h of deprovisioning; Azure: hours before the cancellation
# within 24 h; GCP: timestamps before the cancellation): a customer's last hours are not lost.
ENDED_STATUSES = ("CANCELLED",)


def reports_usage(status: str | None, end_time: datetime | None) -> bool:
    """THE usable-link rule (``storage.window.USABLE_LINK_SQL`` is its SQL form, tested to agree): a
    usable status for its whole term, or an ended one with a known end time, for usage before that time."""
    return status in USABLE_STATUSES or (status in ENDED_STATUSES and end_time is not None)


class EntitlementLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def buyerID(self) -> str | None: ...  # noqa: N802 - Suger's field name


E = TypeVar("E", bound=EntitlementLike)


@dataclass(frozen=True)
class Link(Generic[E]):
    metronome_customer_id: str
    buyer_id: str | None
    entitlement: E
    source: str  # "buyer" | "override"


class UnknownEntitlementError(ValueError):
    """An override names an entitlement Suger does not have."""


def resolve_links(
    buyers: Iterable[tuple[str, str]], entitlements: Sequence[E], overrides: Sequence[tuple[str, str]]
) -> list[Link[E]]:
    """Links from (buyer id, Metronome customer id) pairs and the org's entitlements, then the
    (Metronome customer id, entitlement id) overrides."""
    everything = {e.id: e for e in entitlements}
    by_buyer: dict[str, list[E]] = {}
    for ent in everything.values():
        if ent.buyerID:
            by_buyer.setdefault(ent.buyerID, []).append(ent)
    overridden = {customer for customer, _ in overrides}
    links = [Link(customer, buyer, ent, "buyer")
             for buyer, customer in buyers if customer not in overridden
             for ent in by_buyer.get(buyer, [])]
    missing = sorted(ent_id for _, ent_id in overrides if ent_id not in everything)
    if missing:
        raise UnknownEntitlementError(f"customer_links name entitlements Suger does not have: {', '.join(missing)}")
    links += [Link(customer, everything[ent_id].buyerID, everything[ent_id], "override")
              for customer, ent_id in overrides]
    return links
