"""The work of each asset, check and sensor as plain functions (no Dagster): each reads its inputs
through the clients and storage it is given, calls the pure rules of ``core``, and returns a typed
result that the Dagster glue in ``orchestration`` turns into metadata."""
