"""The README is generated where it can be and checked where it cannot: its configuration reference is rendered from
the configuration model (``metronome_suger/docs.py``), and its Troubleshooting section has an entry for every asset
check the definitions hold and quotes only messages the code writes."""

import ast
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from metronome_suger import docs
from metronome_suger.config import AppConfig, parse_config_data
from metronome_suger.orchestration.definitions import build_definitions, build_reconciliation_definitions

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PACKAGE = ROOT / "metronome_suger"
MINIMAL = {"suger": {"org_id": "org-1"}, "start": "2026-11-01T00:00:00Z"}


def readme() -> str:
    return README.read_text(encoding="utf-8")


def section(title: str) -> str:
    """The README's ``## title`` section, up to the next ``## `` heading."""
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", readme(), re.M | re.S)
    assert found, f"README.md has no '## {title}' section"
    return found.group(1)


# ---- configuration reference ---------------------------------------------------------------------------------


def test_readme_configuration_reference_is_current() -> None:
    text = readme()
    assert docs.replace_reference(text, docs.render_reference()) == text, (
        f"README.md's configuration reference is stale (the configuration model changed): run `{docs.COMMAND}` "
        "(or `make docs`) and commit README.md")


def test_reference_sits_in_the_configuration_section_below_the_example() -> None:
    configuration = section("Configuration")
    example, reference = configuration.index("```yaml"), configuration.index("### Configuration reference")
    assert example < reference < configuration.index(docs.START) < configuration.index(docs.END)


def test_every_config_field_has_a_description() -> None:
    """A field without one would be a row of the reference saying nothing."""
    missing = [f"{model.__name__}.{name}" for model in docs.nested_models(AppConfig)
               for name, field in model.model_fields.items() if not (field.description or "").strip()]
    assert not missing, f"configuration fields without a Field(description=...): {', '.join(missing)}"


def test_every_config_key_is_in_the_reference() -> None:
    """Every model reachable from AppConfig is expanded: its keys are rows under the key that holds it."""
    keys = {row.key for row in docs.reference_rows(AppConfig)}
    assert {"suger.org_id", "http.max_attempts", "customer_links[].entitlement_id",
            "dimension_conversion.<AWS/AZURE/GCP>.<key>[].multiplier", "storage.url"} <= keys
    leaves = {key.rsplit(".", 1)[-1].removesuffix("[]") for key in keys}
    for model in docs.nested_models(AppConfig):
        assert set(model.model_fields) <= leaves, model.__name__


class Limits(BaseModel):
    """A nested section."""

    size: Annotated[int, Field(ge=1, le=10)] = Field(3, description="How many.")
    name: str = Field(min_length=1, description="A required name.")


class Target(BaseModel):
    weight: Decimal = Field(Decimal("0.50"), description="Weight | share.")
    unit: Literal["a", "b"] = Field("a", description="Unit <value>.")


class Sample(BaseModel):
    limits: Limits = Field(description="The limits.")
    optional: Limits | None = Field(None, description="Maybe limits.")
    targets: list[Target] = Field(default_factory=list, description="Targets.")
    table: dict[Literal["AWS", "GCP"], dict[str, list[Target]]] = Field(default_factory=dict, description="Per key.")
    hours: dict[str, Annotated[Decimal, Field(gt=0)]] = Field(default_factory=lambda: {"AWS": Decimal(6)},
                                                              description="Hours.")
    enabled: bool = Field(True, description="On.")
    note: str | None = Field(None, description="A note.")
    url: str = Field("https://example.com/x", description="Where.")
    word: str = Field("yes", description="A YAML word.")
    ratio: float = Field(0.5, description="A ratio.")


def test_renderer_expands_nested_keys_with_types_and_defaults() -> None:
    rows = {row.key: row for row in docs.reference_rows(Sample)}
    assert list(rows) == [
        "limits", "limits.size", "limits.name", "optional", "optional.size", "optional.name", "targets",
        "targets[].weight", "targets[].unit", "table", "table.<AWS/GCP>.<key>[].weight",
        "table.<AWS/GCP>.<key>[].unit", "hours", "enabled", "note", "url", "word", "ratio"]
    as_tuple = {key: (row.type, row.default, row.required) for key, row in rows.items()}
    assert as_tuple["limits"] == ("mapping", "", True)
    assert as_tuple["limits.size"] == ("integer, ≥ 1, ≤ 10", "3", False)
    assert as_tuple["limits.name"] == ("string, not empty", "", True)
    assert as_tuple["optional"] == ("mapping or null", "null", False)
    assert as_tuple["targets"] == ("list of mapping", "[]", False)
    assert as_tuple["targets[].weight"] == ("decimal", "0.5", False)
    assert as_tuple["targets[].unit"] == ("a / b", "a", False)
    assert as_tuple["table"] == ("map of AWS / GCP → map of string → list of mapping", "{}", False)
    assert as_tuple["hours"] == ("map of string → decimal, > 0", "{AWS: 6}", False)
    assert as_tuple["enabled"] == ("boolean", "true", False)
    assert as_tuple["note"] == ("string or null", "null", False)
    assert as_tuple["url"] == ("string", "https://example.com/x", False)
    assert as_tuple["word"] == ("string", '"yes"', False)  # plain `yes` would read back as a boolean
    assert as_tuple["ratio"] == ("number", "0.5", False)
    assert rows["limits"].description == "The limits."


def test_rendered_table_escapes_cells() -> None:
    table = docs.render_reference(Sample)
    assert "| `limits.size` | integer, ≥ 1, ≤ 10 | `3` | no | How many. |" in table
    assert "| `limits.name` | string, not empty | – | yes | A required name. |" in table
    assert "| `targets[].weight` | decimal | `0.5` | no | Weight \\| share. |" in table
    assert "| `targets[].unit` | a / b | `a` | no | Unit &lt;value&gt;. |" in table
    assert "| `table.<AWS/GCP>.<key>[].unit` |" in table


def test_model_defaults_show_what_differs_from_their_own_defaults() -> None:
    assert docs.literal(Limits(name="x")) == "{name: x}"
    assert docs.literal(AppConfig.model_fields["http"].get_default(call_default_factory=True)) == "{}"


def test_replace_reference_keeps_everything_outside_the_markers() -> None:
    text = f"intro\n{docs.START}\nold\n{docs.END}\noutro\n"
    assert docs.replace_reference(text, "new table\n") == f"intro\n{docs.START}\nnew table\n{docs.END}\noutro\n"
    with pytest.raises(ValueError, match="exactly one"):
        docs.replace_reference("no markers", "x")
    with pytest.raises(ValueError, match="exactly one"):
        docs.replace_reference(f"{docs.END}\n{docs.START}", "x")


def test_command_checks_then_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "README.md"
    stale.write_text(f"# x\n\n{docs.START}\nold\n{docs.END}\n", encoding="utf-8")
    assert docs.main(["--readme", str(stale)]) == 1
    out, err = capsys.readouterr()
    assert "-old" in out and "+| `suger.org_id` |" in out  # the diff
    assert docs.COMMAND in err
    assert "old" in stale.read_text(encoding="utf-8")  # checking never writes
    assert docs.main(["--readme", str(stale), "--write"]) == 0
    assert docs.main(["--readme", str(stale)]) == 0
    assert "up to date" in capsys.readouterr().out


# ---- troubleshooting ---------------------------------------------------------------------------------------------


def check_names() -> set[str]:
    """Every asset check the definitions define, in every billing mode (both code locations)."""
    names: set[str] = set()
    for mode in ("quantity", "amount_hourly", "amount_daily"):
        config = parse_config_data({**MINIMAL, "billing_mode": mode}, origin="test")
        for build in (build_definitions, build_reconciliation_definitions):
            names |= {key.name for key in build(config).resolve_asset_graph().asset_check_keys}
    return names


def test_every_check_has_a_troubleshooting_entry() -> None:
    names = check_names()
    assert {"mapping_completeness", "marketplace_reconciliation"} <= names  # the collection works
    headings = [line for line in section("Troubleshooting").splitlines() if line.startswith("#### ")]
    missing = sorted(name for name in names if not any(f"`{name}`" in heading for heading in headings))
    assert not missing, f"README.md's Troubleshooting has no '#### `check`' entry for: {', '.join(missing)}"


def code_templates() -> list[str]:
    """Every string literal of the package, an f-string's replacement fields written as ``…`` (adjacent literals
    are one string, as Python joins them)."""
    out = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                out.append("".join(v.value if isinstance(v, ast.Constant) else "…" for v in node.values))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.append(node.value)
    return out


COMMANDS = ("metronome-suger ", "dagster ", "python ", "make ")


def quoted_messages() -> list[str]:
    """The code spans of Troubleshooting that quote a message: those with a ``…`` and those of four words or
    more, commands excepted (fenced blocks are sample output, not quotes)."""
    text = re.sub(r"^```.*?^```", "", section("Troubleshooting"), flags=re.M | re.S)
    spans = [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", text)]
    return [span for span in spans
            if ("…" in span or len(span.split()) >= 4) and not span.startswith(COMMANDS)]


def invented(quotes: list[str], templates: list[str]) -> list[str]:
    """The quotes some literal piece of which (the text between two ``…``) is in no string of the code."""
    return [quote for quote in quotes
            if not all(any(piece in t for t in templates) for piece in quote.split("…") if piece)]


def test_troubleshooting_quotes_only_messages_the_code_writes() -> None:
    templates = code_templates()
    quotes = quoted_messages()
    assert len(quotes) > 30  # the parsing works
    wrong = invented(quotes, templates)
    assert not wrong, "Troubleshooting quotes messages the code never writes:\n" + "\n".join(wrong)


def test_the_quote_check_tells_a_real_message_from_an_invented_one() -> None:
    templates = code_templates()
    real, made_up = "environment variable … is not set (it must hold …)", "environment variable … is never set"
    assert invented([real, made_up], templates) == [made_up]
