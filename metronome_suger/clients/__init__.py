"""HTTP clients for Metronome and Suger (no Dagster imports): typed models, retries, Decimals."""
