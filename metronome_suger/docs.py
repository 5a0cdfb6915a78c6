"""The README's configuration reference, generated from the configuration model (never typed by hand).

Every key of ``AppConfig`` and of the models nested in it (sections, list items, map values) becomes one row:
its key path (``suger.org_id``, ``customer_links[].entitlement_id``), type, default, whether it is required,
and its ``Field`` description. A new field or section appears in the reference as soon as it is in the model.

``python -m metronome_suger.docs`` exits 1 and prints a diff when README.md's reference is stale;
``--write`` (``make docs``) rewrites the text between the README's markers.
"""

import argparse
import datetime as dt
import difflib
import enum
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import AliasChoices, BaseModel, SecretStr
from pydantic.fields import FieldInfo

from metronome_suger.config import AppConfig

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
COMMAND = "python -m metronome_suger.docs --write"
README = Path("README.md")

_SCALARS: dict[Any, str] = {
    str: "string", int: "integer", float: "number", Decimal: "decimal", bool: "boolean",
    dt.datetime: "datetime (ISO 8601)", dt.date: "date (YYYY-MM-DD)", dt.time: "time", dt.timedelta: "duration",
    Path: "path", SecretStr: "string (secret)", type(None): "null", Any: "any", object: "any",
}
# Plain YAML scalars that would not read back as the same string.
_YAML_WORDS = {"", "~", "null", "true", "false", "yes", "no", "on", "off", "y", "n"}
_PLAIN = re.compile(r"[A-Za-z_./][A-Za-z0-9_./:@+-]*")


@dataclass(frozen=True)
class Row:
    """One key of the reference."""

    key: str
    type: str
    default: str  # a YAML literal; "" for a required key
    required: bool
    description: str


# ---- types ---------------------------------------------------------------------------------------------------


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """The type inside ``Annotated`` (and type aliases), with the constraints found on the way."""
    constraints: list[Any] = []
    while True:
        value = getattr(annotation, "__value__", None)  # ``type X = ...`` (Python 3.12)
        if value is not None and not isinstance(annotation, type):
            annotation = value
        elif typing.get_origin(annotation) is Annotated:
            annotation, *extra = typing.get_args(annotation)
            for item in extra:
                constraints += item.metadata if isinstance(item, FieldInfo) else [item]
        else:
            return annotation, constraints


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _union_args(annotation: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return None


_BOUNDS = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))


def _constraint_text(constraints: Sequence[Any]) -> list[str]:
    """Pydantic's constraints (``annotated_types`` objects, read by their attributes) in words."""
    out = []
    for item in constraints:
        out += [f"{sign} {literal(getattr(item, name))}" for name, sign in _BOUNDS
                if getattr(item, name, None) is not None]
        min_length, max_length = getattr(item, "min_length", None), getattr(item, "max_length", None)
        if min_length:
            out.append("not empty" if min_length == 1 else f"at least {min_length} long")
        if max_length is not None:
            out.append(f"at most {max_length} long")
        if isinstance(getattr(item, "pattern", None), str):
            out.append(f"matching {item.pattern}")
    return out


def type_text(annotation: Any, constraints: Sequence[Any] = ()) -> str:
    """A readable type: ``integer, ≥ 1``, ``list of string``, ``map of AWS / AZURE / GCP → decimal, > 0``,
    ``quantity / amount_hourly``, ``string or null``; a nested model is a ``mapping`` (its keys are rows)."""
    annotation, inner = _unwrap(annotation)
    constraints = [*constraints, *inner]
    union = _union_args(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if union is not None:
        parts = [type_text(a) for a in union if a is not type(None)]
        text = " or ".join(dict.fromkeys(parts)) + (" or null" if type(None) in union else "")
    elif origin is Literal:
        text = " / ".join(literal(a) for a in args)
    elif origin in (list, tuple, set, frozenset, Sequence) or annotation in (list, tuple, set, frozenset):
        text = "list of " + type_text(args[0] if args else Any)
    elif origin in (dict, Mapping) or annotation is dict:
        key, value = args if len(args) == 2 else (Any, Any)
        text = f"map of {type_text(key)} → {type_text(value)}"
    elif _is_model(annotation):
        text = "mapping"
    elif isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        text = " / ".join(literal(m.value) for m in annotation)
    elif annotation in _SCALARS:
        text = _SCALARS[annotation]
    elif isinstance(annotation, type):
        text = annotation.__name__
    else:
        text = str(annotation).replace("typing.", "")
    return ", ".join([text, *_constraint_text(constraints)])


def _placeholder(key_type: Any) -> str:
    """How a map's keys appear in a key path: ``<AWS/AZURE/GCP>`` for a fixed set, else ``<key>``."""
    key_type, _ = _unwrap(key_type)
    if typing.get_origin(key_type) is Literal:
        return "<" + "/".join(literal(a) for a in typing.get_args(key_type)) + ">"
    if isinstance(key_type, type) and issubclass(key_type, enum.Enum):
        return "<" + "/".join(literal(m.value) for m in key_type) + ">"
    return "<key>"


def _nested(annotation: Any) -> Iterator[tuple[str, type[BaseModel]]]:
    """The models inside a type, each with the key-path step that reaches it from the field: ``""`` for the
    model itself, ``[]`` for list items, ``.<key>`` for map values (combined: ``.<AWS/AZURE/GCP>.<key>[]``)."""
    annotation, _ = _unwrap(annotation)
    union = _union_args(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if union is not None:
        for arg in union:
            yield from _nested(arg)
    elif _is_model(annotation):
        yield "", annotation
    elif origin in (list, tuple, set, frozenset, Sequence) and args:
        for arg in args:
            if arg is not Ellipsis:
                yield from (("[]" + step, model) for step, model in _nested(arg))
    elif origin in (dict, Mapping) and len(args) == 2:
        yield from ((f".{_placeholder(args[0])}" + step, model) for step, model in _nested(args[1]))


def nested_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and every model reachable through its fields' types, each once, in reference order."""
    found: list[type[BaseModel]] = []

    def visit(current: type[BaseModel]) -> None:
        if current in found:
            return
        found.append(current)
        for field in current.model_fields.values():
            for _, inner in _nested(field.annotation):
                visit(inner)

    visit(model)
    return found


# ---- values ----------------------------------------------------------------------------------------------------


def literal(value: Any) -> str:
    """A value as it would be written in the YAML file: ``null``, ``true``, ``30.0``, ``[]``, ``{AWS: 6}``,
    plain strings unquoted when YAML reads them back unchanged."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return literal(value.value)
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value.is_finite() else str(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, SecretStr):
        return '"**********"'
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return f'"{value.isoformat()}"'
    if isinstance(value, dt.timedelta):
        return literal(value.total_seconds())
    if isinstance(value, Path):
        return literal(str(value))
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS and not _looks_numeric(value):
            return value
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, BaseModel):  # only what differs from its own defaults: {} when nothing does
        return literal(value.model_dump(exclude_defaults=True))
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple, set, frozenset)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    return str(value)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        if getattr(field, "default_factory_takes_data", False):  # computed from the other keys
            return "(computed)"
        return literal(typing.cast(Callable[[], Any], field.default_factory)())
    return literal(field.default)


# ---- rows and Markdown -------------------------------------------------------------------------------------------


def _key(name: str, field: FieldInfo) -> str:
    """The key as written in the file (a plain alias replaces the attribute name)."""
    if isinstance(field.validation_alias, str):
        return field.validation_alias
    if isinstance(field.validation_alias, AliasChoices):
        first = field.validation_alias.choices[0]
        return first if isinstance(first, str) else name
    return field.alias or name


def _other_names(name: str, field: FieldInfo) -> list[str]:
    if not isinstance(field.validation_alias, AliasChoices):
        return []
    key = _key(name, field)
    return [c for c in field.validation_alias.choices if isinstance(c, str) and c != key]


def _description(name: str, field: FieldInfo) -> str:
    text = " ".join((field.description or "").split())
    for other in _other_names(name, field):
        if other not in text:
            text += f" Also accepted as `{other}`."
    return text.strip()


def reference_rows(model: type[BaseModel], prefix: str = "", _path: tuple[type[BaseModel], ...] = ()) -> list[Row]:
    """One row per key of ``model``, each nested model's keys right after the key that holds it (a model that
    contains itself is expanded once)."""
    rows: list[Row] = []
    _path = (*_path, model)
    for name, field in model.model_fields.items():
        key = prefix + _key(name, field)
        required = field.is_required()
        rows.append(Row(key, type_text(field.annotation, field.metadata), "" if required else _default(field),
                        required, _description(name, field)))
        for step, inner in _nested(field.annotation):
            if inner not in _path:
                rows += reference_rows(inner, f"{key}{step}.", _path)
    return rows


def _cell(text: str, *, code: bool = False) -> str:
    """Safe in a table cell: ``|`` escaped; outside a code span also ``<`` and ``>`` (``<value>`` would be read
    as an HTML tag and vanish)."""
    text = text.replace("|", "\\|")
    return text if code else text.replace("<", "&lt;").replace(">", "&gt;")


def render_reference(model: type[BaseModel] = AppConfig) -> str:
    """The reference as Markdown: one table of every key, nested keys as dotted paths."""
    lines = [
        f"<!-- generated from {model.__module__}.{model.__qualname__} by `{COMMAND}` (make docs): "
        "edit the Field descriptions, not this table -->",
        "",
        "`<key>` stands for a key you choose (a map's key), `[]` for every item of a list. A key whose type is "
        "`mapping` is a section: its keys follow it, and a default of `{}` means each of them takes its own "
        "default.",
        "",
        "| key | type | default | required | description |",
        "|---|---|---|---|---|",
    ]
    for row in reference_rows(model):
        default = f"`{_cell(row.default, code=True)}`" if row.default else "–"
        required = "yes" if row.required else "no"
        lines.append(f"| `{_cell(row.key, code=True)}` | {_cell(row.type)} | {default} | {required} "
                     f"| {_cell(row.description)} |")
    return "\n".join(lines) + "\n"


def replace_reference(text: str, generated: str) -> str:
    """``text`` with everything between the two markers replaced by ``generated``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"README must hold exactly one {START} followed by one {END}")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{generated.strip()}\n{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metronome_suger.docs",
                                     description="Check (default) or rewrite README.md's configuration reference.")
    parser.add_argument("--write", action="store_true", help="rewrite the reference in the README")
    parser.add_argument("--readme", type=Path, default=README, help="the README to check or rewrite (README.md)")
    args = parser.parse_args(argv)
    path: Path = args.readme
    text = path.read_text(encoding="utf-8")
    try:
        fresh = replace_reference(text, render_reference())
    except ValueError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    if fresh == text:
        print(f"{path}: the configuration reference is up to date")
        return 0
    if args.write:
        path.write_text(fresh, encoding="utf-8")
        print(f"{path}: configuration reference rewritten")
        return 0
    sys.stdout.writelines(difflib.unified_diff(text.splitlines(keepends=True), fresh.splitlines(keepends=True),
                                               f"{path} (current)", f"{path} (generated)"))
    print(f"{path}: the configuration reference is stale: run `{COMMAND}` (or `make docs`)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
