"""Three-way reconciliation: what the pipeline converted from Metronome, what the ledger handed to Suger, and
what Suger told each marketplace (its ``usageRecordReport``s). Pure: the causes, the rule that decides a
group's cause, and the arithmetic that leaves only the *unexplained* difference.

For one entitlement × UTC day × dimension, every converted unit lands in exactly one cause (a partition of the
ledger's groups, decided by :func:`group_cause`); the marketplace side adds what it was told beyond our billed
groups (the decimal carry, rounding in its request, groups of Suger's own Metronome integration). Whatever
the marketplace was told that none of these explains is *unexplained*: a report whose quantity disagrees with
the groups it names, a group billed twice, a group of unknown origin.
"""

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal

# Suger's report statuses (suger_sdk_python models/usage_record_report_status.py).
BILLED_REPORTS = ("SUCCESS", "INVOICED")  # the marketplace accepted the usage (and, later, invoiced it)
FAILED_REPORTS = ("FAILED",)  # the marketplace refused it; the report keeps its message
IN_FLIGHT_REPORTS = ("CREATED",)  # the marketplace call has not completed
# CANCELED / DELETED reports bill nothing and decide nothing: their groups fall back to the ledger's status.
REPORT_GRACE = timedelta(hours=6)  # a group handed to Suger without a report for longer is a problem
SUGER_INTEGRATION = "METRONOME"  # metaInfo.source of the groups Suger's own Metronome integration stores

Cause = Literal["billed", "failed", "pending", "at_risk", "expired", "rejected", "in_flight", "missing_report"]
# The causes of a converted unit not billed, in the order shown; "billed" is the goal, not a difference.
UNBILLED: tuple[Cause, ...] = ("pending", "at_risk", "in_flight", "missing_report", "failed", "expired", "rejected")
# Differences named on the marketplace side, and the fall of a converted value after it was sent.
MARKETPLACE_SIDE = ("late_decrease", "carry", "rounding", "suger_integration")
LOST: tuple[Cause, ...] = ("failed", "expired", "rejected")  # dollars the marketplace will not bill
PROBLEMS: tuple[str, ...] = ("missing_report", "unexplained")  # what fails the check and the command


# A group's marketplace outcome from the statuses of the reports naming it, first match wins: a group that
# failed once and was billed on Suger's retry is billed. Its cause is that outcome, else the ledger's status
# (pending, expired, rejected), else in flight until REPORT_GRACE after it was handed over, then missing.
OUTCOMES: tuple[tuple[Cause, tuple[str, ...]], ...] = (
    ("billed", BILLED_REPORTS), ("failed", FAILED_REPORTS), ("in_flight", IN_FLIGHT_REPORTS))
LEDGER_CAUSES: tuple[Cause, ...] = ("pending", "expired", "rejected")


def request_quantities(aws: dict[str, Any] | None, azure: dict[str, Any] | None,
                       gcp: dict[str, Any] | None) -> dict[str, Decimal] | None:
    """Per dimension key, the quantity in the raw marketplace request of a report (None without one): AWS
    ``UsageRecords[].Dimension/Quantity``, Azure ``request[].dimension/quantity``, GCP
    ``metricValueSets[].metricName`` (``product/key``) with ``int64Value`` or ``doubleValue``
    (suger_sdk_python models aws_marketplace_metering_*, azure_marketplace_metering_*,
    gcp_marketplace_metering_*)."""
    found: dict[str, Decimal] = {}

    def add(key: Any, value: Any) -> None:
        if key is not None and value is not None:
            found[str(key)] = found.get(str(key), Decimal(0)) + Decimal(str(value))

    if aws:
        for record in aws.get("UsageRecords") or []:
            add(record.get("Dimension"), record.get("Quantity"))
    elif azure:
        for event in azure.get("request") or []:
            add(event.get("dimension"), event.get("quantity"))
    elif gcp:
        for metric in gcp.get("metricValueSets") or []:
            key = str(metric.get("metricName") or "").rsplit("/", 1)[-1]
            for value in metric.get("metricValues") or []:
                add(key, value.get("int64Value", value.get("doubleValue")))
    else:
        return None
    return found


@dataclass
class Line:
    """One entitlement × day × dimension. Units are the marketplace's dimension units."""

    entitlement_id: str
    partner: str
    dimension_key: str
    converted: Decimal = Decimal(0)  # Metronome's usage (or invoice rise) as the last run converted it
    late_decrease: Decimal = Decimal(0)  # converted values that fell after they were sent (over-reported)
    sent: Decimal = Decimal(0)  # what the ledger handed to Suger (sent or accepted)
    causes: dict[str, Decimal] = field(default_factory=dict)  # our converted units by Cause
    told: Decimal = Decimal(0)  # what the billed reports' marketplace requests carried
    carry: Decimal = Decimal(0)  # whole-unit marketplaces: the fraction carried in minus carried out
    rounding: Decimal = Decimal(0)  # the marketplace request's quantity minus the report's reportedRecords
    suger_integration: Decimal = Decimal(0)  # units of Suger's own Metronome integration in our reports
    unit_price: Decimal | None = None  # the report's dimensionUnitPrice, else the entitlement's rate
    notes: list[str] = field(default_factory=list)  # messages: marketplace refusals, disagreeing reports

    def cause(self, name: str) -> Decimal:
        return self.causes.get(name, Decimal(0))

    @property
    def billed(self) -> Decimal:
        return self.cause("billed")

    @property
    def unexplained(self) -> Decimal:
        """What the marketplace was told beyond our billed groups and the named marketplace-side causes."""
        return self.told - self.billed - self.carry - self.rounding - self.suger_integration

    @property
    def problem_units(self) -> Decimal:
        return abs(self.unexplained) + self.cause("missing_report")

    def dollars(self, units: Decimal) -> Decimal | None:
        return None if self.unit_price is None else units * self.unit_price

    @property
    def billed_dollars(self) -> Decimal | None:
        return self.dollars(self.told)

    @property
    def lost_dollars(self) -> Decimal | None:
        return self.dollars(sum((self.cause(c) for c in LOST), Decimal(0)))

    def as_dict(self) -> dict[str, Any]:
        """The line as JSON-ready values (decimals as exact strings)."""
        def text(value: Decimal | None) -> str | None:
            return None if value is None else units(value)
        return {"entitlement_id": self.entitlement_id, "partner": self.partner, "dimension_key": self.dimension_key,
                "converted": text(self.converted), "sent": text(self.sent), "told": text(self.told),
                "unit_price": text(self.unit_price), "billed_dollars": text(self.billed_dollars),
                "lost_dollars": text(self.lost_dollars), "unexplained": text(self.unexplained),
                "differences": {k: text(v) for k, v in self.differences().items()}, "notes": list(self.notes)}

    def differences(self) -> dict[str, Decimal]:
        """Every nonzero cause of a difference between converted and told, named (units)."""
        named: dict[str, Decimal] = {c: self.cause(c) for c in UNBILLED}
        named.update(late_decrease=self.late_decrease, carry=self.carry, rounding=self.rounding,
                     suger_integration=self.suger_integration, unexplained=self.unexplained)
        return {k: v for k, v in named.items() if v != 0}


@dataclass(frozen=True)
class Reconciliation:
    """One UTC day (optionally one entitlement): its lines and the reports it could not attribute."""

    day: str
    lines: list[Line]
    foreign_groups: list[str]  # group ids in our entitlements' reports that neither we nor Suger's integration sent
    reports: int

    @property
    def problems(self) -> list[Line]:
        return [line for line in self.lines if line.problem_units != 0]

    def total(self, attr: str) -> Decimal:
        return sum((getattr(line, attr) for line in self.lines), Decimal(0))

    def total_cause(self, name: str) -> Decimal:
        return sum((line.differences().get(name, Decimal(0)) for line in self.lines), Decimal(0))

    def total_dollars(self, attr: str) -> Decimal:
        return sum((v for line in self.lines if (v := getattr(line, attr)) is not None), Decimal(0))


def units(value: Decimal) -> str:
    return f"{value.normalize():f}" if value != 0 else "0"


def money(value: Decimal | None) -> str:
    return "—" if value is None else f"${value.quantize(Decimal('0.01')):,}"


def describe(line: Line) -> str:
    """One line as text: its figures and its named differences."""
    causes = ", ".join(f"{name} {units(v)}" for name, v in line.differences().items()) or "none"
    return (f"{line.entitlement_id} {line.partner} {line.dimension_key}: converted {units(line.converted)}, "
            f"sent {units(line.sent)}, told {units(line.told)} ({money(line.billed_dollars)}); differences: "
            f"{causes}" + "".join(f"; {note}" for note in line.notes))
