"""Settings dataclasses whose fields carry their default, limits and help once.

A field made with `setting(...)` is checked when the dataclass is built (type and range, the error naming the
setting), and the same field gives the CLI flag (`add_arguments`) and the workflow's config schema
(`json_schema`): nothing about a setting is written twice.

    @dataclass(frozen=True)
    class Settings:
        workers: int = setting(4, "threads loading images", minimum=1)
        def __post_init__(self):
            check(self)
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

from .errors import UserError

_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", dict: "object"}
_KIND_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object"}


def setting(default: Any, help: str, *, minimum=None, exclusive_minimum=None, maximum=None, choices=None,
            flag: bool = True) -> Any:  # fmt: skip
    """A dataclass field with its limits; `flag=False` keeps it out of the CLI (e.g. a dict)."""
    metadata = {"help": help, "minimum": minimum, "exclusive_minimum": exclusive_minimum, "maximum": maximum,
                "choices": tuple(choices) if choices is not None else None, "flag": flag}  # fmt: skip
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _base_type(cls, field: dataclasses.Field) -> tuple[type, bool]:
    """(the field's type, whether None is allowed): `int | None` -> (int, True)."""
    hint = typing.get_type_hints(cls)[field.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return typing.get_origin(args[0]) or args[0], len(args) < len(typing.get_args(hint))
    return typing.get_origin(hint) or hint, False


def _limits(field: dataclasses.Field) -> dict:
    return {k: v for k, v in field.metadata.items() if k not in ("help", "flag") and v is not None}


def check(instance, what: str | None = None) -> None:
    """Raise UserError unless every field of `instance` has its type and lies in its range."""
    label = what or f"{type(instance).__name__} setting"
    for field in dataclasses.fields(instance):
        if "help" not in field.metadata:
            continue
        value = getattr(instance, field.name)
        kind, nullable = _base_type(type(instance), field)
        if value is None:
            if nullable:
                continue
            raise UserError(f"{label} {field.name} must be set (got null)")
        # bool is an int to Python, not to a setting; an int is a fine float
        accepted = bool if kind is bool else (int, float) if kind is float else kind
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, accepted):
            raise UserError(f"{label} {field.name} must be {_KIND_WORDS[kind]}, got {value!r}")
        limits = _limits(field)
        if "choices" in limits and value not in limits["choices"]:
            raise UserError(f"{label} {field.name} must be one of {', '.join(map(str, limits['choices']))}, "
                            f"got {value!r}")  # fmt: skip
        if "minimum" in limits and value < limits["minimum"]:
            raise UserError(f"{label} {field.name} must be >= {limits['minimum']}, got {value!r}")
        if "exclusive_minimum" in limits and value <= limits["exclusive_minimum"]:
            raise UserError(f"{label} {field.name} must be > {limits['exclusive_minimum']}, got {value!r}")
        if "maximum" in limits and value > limits["maximum"]:
            raise UserError(f"{label} {field.name} must be <= {limits['maximum']}, got {value!r}")


def from_dict(cls, values: dict, what: str | None = None):
    """`cls(**values)`, an unknown key being a UserError that lists the valid ones."""
    if not isinstance(values, dict):
        raise UserError(f"{what or cls.__name__}: expected an object of settings, got {type(values).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise UserError(f"{what or cls.__name__}: unknown settings {unknown}; valid: {', '.join(names)}")
    return cls(**values)


def json_schema(cls, *, defaults: bool = True) -> dict:
    """A JSON schema of the dataclass's fields (types, limits, descriptions; defaults unless None)."""
    properties = {}
    for field in dataclasses.fields(cls):
        if "help" not in field.metadata:
            continue
        kind, nullable = _base_type(cls, field)
        prop: dict = {"description": field.metadata["help"], "type": _JSON_TYPES[kind]}
        if nullable or field.default is None:
            prop["type"] = [prop["type"], "null"]
        limits = _limits(field)
        if "choices" in limits:
            prop = {"description": prop["description"], "enum": list(limits["choices"]) + ([None] if nullable else [])}
        for key, name in (("minimum", "minimum"), ("exclusive_minimum", "exclusiveMinimum"), ("maximum", "maximum")):
            if key in limits:
                prop[name] = limits[key]
        if defaults and field.default is not None and field.default is not dataclasses.MISSING:
            prop["default"] = field.default
        properties[field.name] = prop
    return {"type": "object", "additionalProperties": False, "properties": properties}


def add_arguments(parser: argparse.ArgumentParser, cls, *, exclude: tuple[str, ...] = ()) -> None:
    """One `--flag-name` per field of `cls` (type, choices and help from the field). A flag not given stays out of
    the parsed namespace (so that `values_from_args` can tell it from a default)."""
    for field in dataclasses.fields(cls):
        if "help" not in field.metadata or not field.metadata["flag"] or field.name in exclude:
            continue
        kind, _ = _base_type(cls, field)
        name = "--" + field.name.replace("_", "-")
        default = None if field.default is dataclasses.MISSING else field.default
        help_text = field.metadata["help"] + (f" (default: {default})" if default is not None else "")
        help_text = help_text.replace("%", "%%")
        if kind is bool:
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
            continue
        choices = field.metadata["choices"]
        metavar = None if choices else field.name.upper()
        parser.add_argument(
            name, type=kind, default=argparse.SUPPRESS, choices=choices, help=help_text, metavar=metavar
        )


def values_from_args(cls, args: argparse.Namespace) -> dict:
    """The fields of `cls` given as flags (see `add_arguments`)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def write_settings(instance, path) -> None:
    """Every field of a settings dataclass as a JSON object (what `--settings FILE` reads), atomically."""
    from .atomic import write_json

    write_json(path, dataclasses.asdict(instance))
