"""``dg scaffold defs metronome_suger.MetronomeSugerComponent <path>``: a commented defs.yaml that loads as is.

The starting configuration is the bundled sandbox's (``metronome-suger sandbox`` serves both APIs on
loopback), reduced to the keys a new user edits first; every other key keeps its documented default.
"""

from datetime import datetime, timezone

import dagster as dg
from dagster.components.component_scaffolding import scaffold_component

_DEFS_YAML = """\
# Meters Metronome usage into the AWS, Azure and GCP marketplaces through Suger. The attributes are the
# keys of a metronome_suger.yaml; all of them, with their descriptions:
#   dg utils inspect-component {type_name} --defs-yaml-schema
# Instead of the keys, a file (relative to this folder) can hold them:
#   attributes: {{config_file: metronome_suger.yaml}}
# Tokens are never written here: the *_env keys name the environment variables that hold them.
type: {type_name}

attributes:
  # The local sandbox (`metronome-suger sandbox`) serves both APIs on loopback. For the real APIs,
  # delete both base_url lines (the defaults are https://api.metronome.com and https://api.suger.cloud).
  metronome:
    base_url: http://127.0.0.1:8701
    api_token_env: METRONOME_API_TOKEN    # NAME of the variable holding the Metronome API token
  suger:
    base_url: http://127.0.0.1:8702
    org_id: org-sandbox                   # your Suger organization id
    api_key_env: SUGER_API_KEY            # NAME of the variable holding the Suger API key
  billing_mode: quantity                  # quantity | amount_hourly | amount_daily
  start: "{start}"           # first partition: a whole UTC hour
  settle_minutes: 15                      # minutes after a window closes before it is read
  # Per marketplace (AWS, AZURE, GCP): Metronome billable metric (name or id) -> Suger dimensions.
  # QUANTITY sends quantity x multiplier; every target must exist on the linked entitlements.
  dimension_conversion:
    AWS:
      cpu_hours: [{{dimension_key: cpu_hour, mapping_mode: QUANTITY, multiplier: 1}}]
      api_calls: [{{dimension_key: api_request, mapping_mode: QUANTITY, multiplier: 1}}]
  storage:
    url: data/metronome_suger.duckdb
"""


def starting_defs_yaml(type_name: str, now: datetime | None = None) -> str:
    """The scaffolded defs.yaml: partitions start at the beginning of the current UTC day."""
    today = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    start = today.replace(hour=0, minute=0, second=0, microsecond=0)
    return _DEFS_YAML.format(type_name=type_name, start=start.strftime("%Y-%m-%dT%H:%M:%SZ"))


class MetronomeSugerScaffolder(dg.Scaffolder):
    """Writes a working, commented defs.yaml (``--format python`` gets Dagster's default component.py)."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        if request.scaffold_format != "yaml":
            scaffold_component(request)
            return
        text = starting_defs_yaml(request.type_name)
        if request.append:  # `dg scaffold defs ... --append`: another document in an existing defs.yaml
            with open(request.target_path, "a", encoding="utf-8") as handle:
                handle.write("---\n" + text)
            return
        request.target_path.mkdir(parents=True, exist_ok=True)
        (request.target_path / "defs.yaml").write_text(text, encoding="utf-8")
