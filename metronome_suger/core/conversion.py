"""Dimension conversion (Suger's ``dimensionMappingV2``) and THE rule that matches a mapped target to
an entitlement's dimension. Pure: no I/O, no configuration object.

The rule, in one place (``match_dimension``): a target names a dimension by its ``key``, or else by its
``name``. An exact key match wins; a name match counts only when no dimension has that key; two
dimensions matching the same way is ambiguous, a configuration error that ``mapping_completeness`` and
``verify`` name. The SQL that converts, prices and verifies joins the matches computed here
(``dimension_matches``), so no query re-derives the rule.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal, Protocol

Partner = Literal["AWS", "AZURE", "GCP"]
AMOUNT_SOURCE_KEY = "metronome"  # the amount modes report invoice dollars under this source key
MISSING = "which does not exist"
NO_RATE = "an AMOUNT mapping without a positive rate"


@dataclass(frozen=True)
class Metric:
    id: str
    name: str
    archived: bool = False


@dataclass(frozen=True)
class MappingRow:
    partner: str
    source_key: str  # canonical: the metric name (quantity mode) or ``metronome`` (amount modes)
    dimension_key: str  # the target: what the record sent to Suger names
    mapping_mode: str  # QUANTITY | AMOUNT
    multiplier: Decimal


class Target(Protocol):
    """One configured target of a source key (the configuration's ``DimensionMapping``)."""

    @property
    def dimension_key(self) -> str: ...
    @property
    def mapping_mode(self) -> str: ...
    @property
    def multiplier(self) -> Decimal: ...


class UnknownMetricError(ValueError):
    """A configured metric name/id that Metronome does not know."""


def resolve_metric(key: str, metrics: Sequence[Metric]) -> Metric | None:
    """A source key names a metric by name or by id; names win over ids."""
    for metric in metrics:
        if metric.name == key:
            return metric
    for metric in metrics:
        if metric.id == key:
            return metric
    return None


def whitelisted_ids(enabled: bool, keys: Sequence[str], metrics: Sequence[Metric]) -> set[str]:
    """Ids of the metrics to report: every metric, or the whitelist (which must name known metrics)."""
    if not enabled:
        return {m.id for m in metrics}
    chosen: set[str] = set()
    unknown = []
    for key in keys:
        metric = resolve_metric(key, metrics)
        if metric is None:
            unknown.append(key)
        else:
            chosen.add(metric.id)
    if unknown:
        raise UnknownMetricError(
            "billable_metric_whitelist names metrics Metronome does not have: " + ", ".join(sorted(unknown))
        )
    return chosen


def mapping_rows(
    conversion: Mapping[Any, Mapping[str, Sequence[Target]]], metrics: Sequence[Metric], *, amount_mode: bool
) -> list[MappingRow]:
    """Flatten the configured conversion; metric ids used as keys are rewritten to metric names."""
    rows = []
    for partner, table in conversion.items():
        for key, targets in table.items():
            source = key
            if not amount_mode or key != AMOUNT_SOURCE_KEY:
                metric = resolve_metric(key, metrics)
                source = metric.name if metric else key
            rows += [MappingRow(partner, source, t.dimension_key, t.mapping_mode, t.multiplier) for t in targets]
    return rows


# -- the dimension rule --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dimension:
    """A metering dimension of an entitlement (``entitlement.info.dimensions[]``)."""

    key: str
    name: str | None = None
    rate: Decimal | None = None


@dataclass(frozen=True)
class DimensionMatch:
    """What a mapped target names on one entitlement: a dimension, or why none (``problem``)."""

    target: str
    dimension: Dimension | None
    problem: str | None = None


def match_dimension(target: str, dimensions: Sequence[Dimension]) -> DimensionMatch:
    """THE rule: an exact key match wins; a name match only when no key matches; two dimensions
    matching the same way is ambiguous (a configuration error, never a guess)."""
    return _match(target, tuple(dimensions))


@lru_cache(maxsize=65536)  # entitlements of one product share their dimension list
def _match(target: str, dimensions: tuple[Dimension, ...]) -> DimensionMatch:
    for how, found in (("key", [d for d in dimensions if d.key == target]),
                       ("name", [d for d in dimensions if d.name == target])):
        if len(found) == 1:
            return DimensionMatch(target, found[0])
        if found:
            keys = ", ".join(sorted(repr(d.key) for d in found))
            return DimensionMatch(target, None, f"which is ambiguous ({len(found)} dimensions have that {how}: {keys})")
    return DimensionMatch(target, None, MISSING)


@dataclass(frozen=True)
class LinkedEntitlement:
    entitlement_id: str
    partner: str
    dimensions: tuple[Dimension, ...] = field(default=())
    problem: str | None = None  # why the dimension list is incomplete (nothing can be matched safely)

    def match(self, target: str) -> DimensionMatch:
        return match_dimension(target, self.dimensions)


@dataclass(frozen=True)
class MatchedDimension:
    """A row of the matches table the SQL joins: target → matched dimension and its unit price."""

    entitlement_id: str
    target: str
    dimension_key: str
    rate: Decimal | None


def dimension_matches(
    entitlements: Iterable[LinkedEntitlement], rows: Sequence[MappingRow]
) -> list[MatchedDimension]:
    """Every unambiguous match of a target mapped for each entitlement's partner. Entitlements of one product
    share their dimension list: each distinct (partner, list) is matched once."""
    targets: dict[str, set[str]] = {}
    for row in rows:
        targets.setdefault(row.partner, set()).add(row.dimension_key)
    sharing: dict[tuple[str, tuple[Dimension, ...]], list[str]] = {}
    for ent in entitlements:
        sharing.setdefault((ent.partner, ent.dimensions), []).append(ent.entitlement_id)
    out = []
    for (partner, dimensions), ids in sharing.items():
        for target in sorted(targets.get(partner, ())):
            found = match_dimension(target, dimensions).dimension
            if found is not None:
                out += [MatchedDimension(ent_id, target, found.key, found.rate) for ent_id in ids]
    return out


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


def find_gaps(
    required: Iterable[tuple[str, str, str]],
    rows: Sequence[MappingRow],
    entitlements: Iterable[LinkedEntitlement],
) -> list[MappingGap]:
    """Every unmapped (partner, source key) and every target an entitlement lacks or matches ambiguously.

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
    sharing: dict[tuple[str, tuple[Dimension, ...], str | None], list[str]] = {}
    for ent in entitlements:  # entitlements of one product share their dimension list: checked once
        sharing.setdefault((ent.partner, ent.dimensions, ent.problem), []).append(ent.entitlement_id)
    for (partner, dimensions, problem), ids in sharing.items():
        for source_key in needed_by_partner.get(partner, ()):
            for row in mapped.get((partner, source_key), []):
                found = match_dimension(row.dimension_key, dimensions)
                reason = found.problem
                if problem:  # a key past the listed ones could change any match: block the window
                    reason = f"cannot be checked ({problem})"
                elif found.dimension is not None and row.mapping_mode == "AMOUNT" \
                        and not (found.dimension.rate or 0) > 0:
                    reason = NO_RATE
                if reason:
                    gaps.update(MappingGap(partner, source_key, row.dimension_key, ent_id, reason) for ent_id in ids)
    return sorted(gaps, key=lambda g: (g.partner, g.source_key, g.dimension_key or "", g.entitlement_id or ""))
