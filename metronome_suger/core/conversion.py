"""Dimension conversion rules (Suger's ``dimensionMappingV2``), resolved against the Metronome metric list.

Pure: turns the configuration plus the metric list into flat mapping rows that the set-based SQL in
``storage/records.py`` joins against usage, and finds the gaps ``mapping_completeness`` reports.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from metronome_suger.config import AMOUNT_SOURCE_KEY, AppConfig


@dataclass(frozen=True)
class Metric:
    id: str
    name: str
    archived: bool = False


@dataclass(frozen=True)
class MappingRow:
    partner: str
    source_key: str  # canonical: the metric name (quantity mode) or ``metronome`` (amount modes)
    dimension_key: str
    mapping_mode: str  # QUANTITY | AMOUNT
    multiplier: Decimal


class UnknownMetricError(ValueError):
    """A configured metric name/id that Metronome does not know."""


def resolve_metric(key: str, metrics: Sequence[Metric]) -> Metric | None:
    """A source key names a metric by name or by id (CONTRACT §3); names win over ids."""
    for metric in metrics:
        if metric.name == key:
            return metric
    for metric in metrics:
        if metric.id == key:
            return metric
    return None


def whitelisted_ids(config: AppConfig, metrics: Sequence[Metric]) -> set[str]:
    """Ids of the metrics to report: every metric, or the whitelist (which must name known metrics)."""
    if not config.billable_metric_whitelist.enabled:
        return {m.id for m in metrics}
    chosen: set[str] = set()
    unknown = []
    for key in config.billable_metric_whitelist.metrics:
        metric = resolve_metric(key, metrics)
        if metric is None:
            unknown.append(key)
        else:
            chosen.add(metric.id)
    if unknown:
        raise UnknownMetricError(
            "billable_metric_whitelist names metrics Metronome does not have: "
            + ", ".join(sorted(unknown))
        )
    return chosen


def mapping_rows(config: AppConfig, metrics: Sequence[Metric]) -> list[MappingRow]:
    """Flatten the configured conversion; metric ids used as keys are rewritten to metric names."""
    rows = []
    for partner, table in config.dimension_conversion.items():
        for key, targets in table.items():
            source = key
            if not config.amount_mode or key != AMOUNT_SOURCE_KEY:
                metric = resolve_metric(key, metrics)
                source = metric.name if metric else key
            for target in targets:
                rows.append(
                    MappingRow(
                        partner=partner,
                        source_key=source,
                        dimension_key=target.dimension_key,
                        mapping_mode=target.mapping_mode,
                        multiplier=target.multiplier,
                    )
                )
    return rows


@dataclass(frozen=True)
class MappingGap:
    partner: str
    source_key: str
    dimension_key: str | None = None
    entitlement_id: str | None = None
    reason: str = ""

    def __str__(self) -> str:
        if self.dimension_key is None:
            return f"{self.partner}: source key '{self.source_key}' is not mapped ({self.reason})"
        return (
            f"{self.partner}: '{self.source_key}' maps to dimension '{self.dimension_key}', "
            f"{self.reason} on entitlement {self.entitlement_id}"
        )


@dataclass(frozen=True)
class LinkedEntitlement:
    entitlement_id: str
    partner: str
    dimension_keys: frozenset[str]  # keys and names: Suger accepts either
    rates: Mapping[str, Decimal | None]

    @classmethod
    def of(
        cls, entitlement_id: str, partner: str,
        dimensions: Iterable[tuple[str, str | None, Decimal | None]],
    ) -> "LinkedEntitlement":
        """From (key, name, rate) triples: a record may name a dimension by key or by name; a key wins
        over another dimension's identical name."""
        dims = list(dimensions)
        rates: dict[str, Decimal | None] = {key: rate for key, _, rate in dims}
        for _, name, rate in dims:
            if name:
                rates.setdefault(name, rate)
        return cls(entitlement_id, partner, frozenset(rates), rates)


def find_gaps(
    required: Iterable[tuple[str, str, str]],
    rows: Sequence[MappingRow],
    entitlements: Iterable[LinkedEntitlement],
) -> list[MappingGap]:
    """Every unmapped (partner, source key) and every target dimension an entitlement lacks.

    ``required`` holds (partner, source_key, why) triples: the keys that must be mapped for a partner
    in use. A target of an AMOUNT mapping also needs a positive rate on the entitlement.
    """
    mapped: dict[tuple[str, str], list[MappingRow]] = {}
    for row in rows:
        mapped.setdefault((row.partner, row.source_key), []).append(row)
    gaps: set[MappingGap] = set()
    needed_by_partner: dict[str, set[str]] = {}
    for partner, source_key, why in required:
        needed_by_partner.setdefault(partner, set()).add(source_key)
        if not mapped.get((partner, source_key)):
            gaps.add(MappingGap(partner, source_key, reason=why))
    for ent in entitlements:
        for source_key in needed_by_partner.get(ent.partner, ()):
            for row in mapped.get((ent.partner, source_key), []):
                if row.dimension_key not in ent.dimension_keys:
                    gaps.add(
                        MappingGap(ent.partner, source_key, row.dimension_key,
                                   ent.entitlement_id, "which does not exist")
                    )
                elif row.mapping_mode == "AMOUNT" and not (ent.rates.get(row.dimension_key) or 0) > 0:
                    gaps.add(
                        MappingGap(ent.partner, source_key, row.dimension_key,
                                   ent.entitlement_id, "an AMOUNT mapping without a positive rate")
                    )
    return sorted(gaps, key=lambda g: (g.partner, g.source_key, g.dimension_key or "", g.entitlement_id or ""))
