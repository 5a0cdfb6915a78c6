"""The smallest Dagster code location: one trivial asset. ``benchmarks/micro.py`` times
``dagster definitions validate -f benchmarks/one_asset.py`` against the project's code location, so the
difference is what the project itself adds to loading (imports, configuration, building definitions)."""

import dagster as dg


@dg.asset
def one() -> int:
    """Nothing to compute: only the cost of Dagster loading a code location remains."""
    return 1


defs = dg.Definitions(assets=[one])
