"""Customer linkage as Suger does it (CONTRACT §4), shared by the ``suger_entitlements`` asset and the CLI.

Buyer ``info.metronomeCustomerId`` → that buyer's entitlements; ``customer_links`` replace the
buyer-derived links of the customers they name.
"""

from dataclasses import dataclass

from metronome_suger.clients.suger import SugerClient
from metronome_suger.clients.suger_models import Entitlement
from metronome_suger.config import AppConfig, ConfigError

USABLE_STATUSES = ("ACTIVE", "PENDING_CANCEL")


@dataclass(frozen=True)
class Link:
    metronome_customer_id: str
    buyer_id: str | None
    entitlement: Entitlement
    source: str  # "buyer" | "override"


def resolve_links(client: SugerClient, config: AppConfig) -> list[Link]:
    buyers = [b for b in client.list_buyers() if b.info and b.info.metronomeCustomerId]
    # One paged listing of the org's entitlements (1,000 a page) instead of one call per buyer.
    everything = {e.id: e for e in client.list_entitlements()}
    by_buyer: dict[str, list[Entitlement]] = {}
    for ent in everything.values():
        if ent.buyerID:
            by_buyer.setdefault(ent.buyerID, []).append(ent)
    links = [
        Link(buyer.info.metronomeCustomerId, buyer.id, ent, "buyer")  # type: ignore[union-attr,arg-type]
        for buyer in buyers
        for ent in by_buyer.get(buyer.id, [])
    ]
    if not config.customer_links:
        return links
    overridden = {link.metronome_customer_id for link in config.customer_links}
    links = [link for link in links if link.metronome_customer_id not in overridden]
    missing = sorted(l.entitlement_id for l in config.customer_links if l.entitlement_id not in everything)
    if missing:
        raise ConfigError(f"customer_links name entitlements Suger does not have: {', '.join(missing)}")
    for link in config.customer_links:
        ent = everything[link.entitlement_id]
        links.append(Link(link.metronome_customer_id, ent.buyerID, ent, "override"))
    return links
