"""``metronome-suger``: sandbox | demo | dev | verify | link | status | reconcile | backfill.

Every command announces the configuration file in use on its first line, and turns configuration and
API errors into one clear message and exit code 1 instead of a traceback.
"""

import argparse
import sys
import warnings
from collections.abc import Sequence
from datetime import date, datetime

from metronome_suger.clients.errors import ApiError
from metronome_suger.config import ConfigError, LoadedConfig, load_config
from metronome_suger.storage.db import SchemaVersionError
from metronome_suger.storage.postgres import DatabaseUnavailableError

# The range of `backfill` (metronome_suger.backfill checks it once the configuration is loaded).
BACKFILL_RANGE_HELP = (
    "--from is the first window: its partition key (2026-11-25-13:00 hourly, 2026-11-25 daily) or its start "
    "time (ISO 8601, UTC unless it carries an offset). --to is the last window, included, when given as a "
    "partition key or a day (YYYY-MM-DD: the whole UTC day, in every billing mode); given as a time, it is "
    "the end of the range, excluded (--from 2026-11-25T10:00Z --to 2026-11-25T13:00Z is the same three hours "
    "as --from 2026-11-25-10:00 --to 2026-11-25-12:00). Both must be on the billing mode's grain (a whole UTC "
    "hour, or midnight UTC for amount_daily), not before the configuration's start, and every window must "
    "have closed settle_minutes ago, as the schedule waits."
)


def _parse_time(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {value!r}") from None


def _parse_day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a day (YYYY-MM-DD): {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metronome-suger", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sandbox = sub.add_parser("sandbox", help="run the Metronome and Suger emulators until Ctrl-C")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--metronome-port", type=int, default=8701)
    sandbox.add_argument("--suger-port", type=int, default=8702)
    sandbox.add_argument("--seed", type=int, default=0)
    sandbox.add_argument("--customers", type=int, default=6)

    demo = sub.add_parser("demo", help="run the last windows end to end against the sandbox")
    demo.add_argument("--windows", type=int, default=6, help="how many closed windows (default 6)")
    demo.add_argument("--mode", choices=["quantity", "amount_hourly", "amount_daily"], default=None,
                      help="billing mode (default: the configuration's)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--customers", type=int, default=6)

    sub.add_parser("dev", help="sandbox plus the Dagster UI on http://127.0.0.1:3000")
    sub.add_parser("verify", help="check both connections and the configuration (Suger's VERIFY); warns when "
                                  "Suger's own Metronome integration reports for the linked entitlements too")

    link = sub.add_parser("link", help="connect a Suger buyer to a Metronome customer")
    link.add_argument("buyer_id")
    link.add_argument("metronome_customer_id")

    status = sub.add_parser("status", help="per window: groups computed, sent, accepted, rejected, expired")
    status.add_argument("--since", type=_parse_time, default=None, help="ISO-8601 start (default: 24 h ago)")
    reconcile = sub.add_parser("reconcile", help="a UTC day: Metronome (converted) vs the ledger vs what Suger told "
                                                 "the marketplace, per entitlement × dimension; exit 1 on an "
                                                 "unexplained difference")
    reconcile.add_argument("--day", type=_parse_day, default=None, help="YYYY-MM-DD (default: yesterday, UTC)")
    reconcile.add_argument("--entitlement", default=None, help="one Suger entitlement id")
    reconcile.add_argument("--json", action="store_true", help="the lines as JSON")

    backfill = sub.add_parser(
        "backfill", help="run a range of past windows through Dagster with this configuration, showing progress, "
                         "then the per-window table; exit 1 if a window failed",
        description="Run the windows from --from to --to, oldest first, each as one run of the pipeline's job in "
                    "this process: on the Dagster instance of DAGSTER_HOME when it is set (the runs show in its UI), "
                    "else on an ephemeral one. A window already reported sends only what is new (exactly once). "
                    + BACKFILL_RANGE_HELP)
    backfill.add_argument("--from", dest="start", required=True, metavar="KEY_OR_TIME",
                          help="the first window: its partition key or start time")
    backfill.add_argument("--to", dest="end", required=True, metavar="KEY_OR_TIME",
                          help="the last window (partition key or day, included) or the end of the range (time, "
                               "excluded)")
    return parser


def _announce(loaded: LoadedConfig) -> None:
    print(loaded.announcement, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Dagster flags partitioned checks as "preview"; that is its business, not the user's output.
    warnings.filterwarnings("ignore", module="dagster")
    warnings.filterwarnings("ignore", message=".*(preview|beta).*")
    try:
        if args.command == "sandbox":
            from metronome_suger.sandbox.server import serve_forever

            serve_forever(host=args.host, metronome_port=args.metronome_port,
                          suger_port=args.suger_port, seed=args.seed, customers=args.customers)
            return 0
        loaded = load_config()
        _announce(loaded)
        if args.command == "demo":
            from metronome_suger.demo import run_demo

            return run_demo(loaded.config, windows=args.windows, mode=args.mode,
                            seed=args.seed, customers=args.customers)
        if args.command == "backfill":
            from metronome_suger.backfill import BackfillError, run_backfill

            try:
                return run_backfill(loaded.config, args.start, args.end)
            except BackfillError as exc:
                print(f"metronome-suger: error: {exc}", file=sys.stderr)
                return 1
        if args.command == "dev":
            from metronome_suger.demo import run_dev

            return run_dev(loaded)
        from metronome_suger import operations

        if args.command == "verify":
            return operations.verify(loaded.config)
        if args.command == "link":
            return operations.link(loaded.config, args.buyer_id, args.metronome_customer_id)
        if args.command == "status":
            return operations.status(loaded.config, since=args.since)
        if args.command == "reconcile":
            return operations.reconcile(loaded.config, day=args.day, entitlement_id=args.entitlement,
                                        as_json=args.json)
    except (ConfigError, ApiError, SchemaVersionError, DatabaseUnavailableError) as exc:
        print(f"metronome-suger: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
