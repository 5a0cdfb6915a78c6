"""The pure side of the reconciliation: the marketplace requests' quantities and a line's arithmetic."""

from decimal import Decimal

from metronome_suger.core.reconciliation import Line, describe, request_quantities


def test_request_quantities_read_each_marketplace_shape() -> None:
    aws = {"ProductCode": "p", "UsageRecords": [{"Dimension": "cpu_hour", "Quantity": 7, "Timestamp": "t"},
                                                {"Dimension": "api_request", "Quantity": 0}]}
    azure = {"request": [{"dimension": "compute", "quantity": 2.25}, {"dimension": "compute", "quantity": 0.75}]}
    gcp = {"metricValueSets": [{"metricName": "prod-1/vcpu_hours",
                                "metricValues": [{"int64Value": "10"}, {"doubleValue": 0.5}]}]}
    assert request_quantities(aws, None, None) == {"cpu_hour": Decimal(7), "api_request": Decimal(0)}
    assert request_quantities(None, azure, None) == {"compute": Decimal(3)}
    assert request_quantities(None, None, gcp) == {"vcpu_hours": Decimal("10.5")}
    assert request_quantities(None, None, None) is None  # no raw request: the report's own figure is used


def test_a_line_leaves_unexplained_only_what_no_cause_names() -> None:
    line = Line("ent-1", "AWS", "cpu_hour", converted=Decimal("4.6"), sent=Decimal("3.6"), told=Decimal(7),
                carry=Decimal("-0.6"), suger_integration=Decimal(4), unit_price=Decimal("0.12"),
                causes={"billed": Decimal("3.6"), "expired": Decimal(1)})
    assert line.unexplained == 0
    assert line.differences() == {"expired": Decimal(1), "carry": Decimal("-0.6"), "suger_integration": Decimal(4)}
    assert (line.billed_dollars, line.lost_dollars) == (Decimal("0.84"), Decimal("0.12"))
    line.told += 2  # the marketplace was told 2 more than anything explains
    assert line.unexplained == 2 and line.problem_units == 2
    assert describe(line) == ("ent-1 AWS cpu_hour: converted 4.6, sent 3.6, told 9 ($1.08); differences: expired 1, "
                              "carry -0.6, suger_integration 4, unexplained 2")
    assert Line("e", "GCP", "d", causes={"missing_report": Decimal(3)}).problem_units == 3
