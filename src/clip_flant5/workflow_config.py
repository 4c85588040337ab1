"""The workflow's configuration schema, completed from the package's registries, and its validation.

`workflow/schemas/config.schema.yaml` holds the structure of a run's configuration (data, models, scoring, hub).
What the package defines is not written there but marked, and filled in here at parse time:
- `x-registry: benchmarks | variants` becomes the enum of registered names;
- `x-settings: train | score` merges in the fields of `TrainSettings` / `ScoreSettings` (type, limits, help;
  score settings with their defaults, training settings without: unset ones are the stage's).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from .errors import UserError


def _registries() -> dict:
    from .benchmarks import REGISTRY
    from .variants import VARIANTS

    return {"benchmarks": list(REGISTRY), "variants": list(VARIANTS)}


def _settings() -> dict:
    from .recipe import TrainSettings
    from .score import ScoreSettings
    from .settings import json_schema

    return {"train": json_schema(TrainSettings, defaults=False), "score": json_schema(ScoreSettings)}


def config_schema(structure: dict) -> dict:
    """The JSON schema of a run's configuration: `structure` with its `x-registry`/`x-settings` marks filled."""
    registries, settings = _registries(), _settings()
    schema = copy.deepcopy(structure)

    def fill(node):
        if isinstance(node, dict):
            if "x-registry" in node:
                node["enum"] = registries[node.pop("x-registry")]
            if "x-settings" in node:
                generated = settings[node.pop("x-settings")]
                node.setdefault("properties", {}).update(generated["properties"])
                node.update(type="object", additionalProperties=False)
            for value in node.values():
                fill(value)
        elif isinstance(node, list):
            for value in node:
                fill(value)

    fill(schema)
    return schema


def write_job_settings(kind: str, values: dict, out: str | os.PathLike, stage: str | None = None):
    """The settings file a job reads (`--settings`): `values` of the config resolved and checked, training
    settings (`kind` "train") over the stage's published recipe, scoring settings over the published scorer's."""
    from .recipe import TrainSettings
    from .settings import from_dict, write_settings
    from .vqascore import ScoreSettings

    if kind == "train":
        settings = TrainSettings.from_dict(stage, values)
    else:
        settings = from_dict(ScoreSettings, values, "scoring settings")
    write_settings(settings, out)
    return settings


def _validator_filling_defaults(schema: dict):
    """A Draft 2020-12 validator that also writes each property's default into the instance where it is unset."""
    from jsonschema import Draft202012Validator, validators

    check_properties = Draft202012Validator.VALIDATORS["properties"]

    def properties(validator, props, instance, subschema):
        if isinstance(instance, dict):
            for name, prop in props.items():
                if "default" in prop and name not in instance:
                    instance[name] = copy.deepcopy(prop["default"])
        yield from check_properties(validator, props, instance, subschema)

    return validators.extend(Draft202012Validator, {"properties": properties})(schema)


def validate_config(config: dict, structure: str | os.PathLike | dict) -> dict:
    """Check `config` against the completed schema, filling in defaults (in place); UserError naming the key."""
    if not isinstance(structure, dict):
        structure = yaml.safe_load(Path(structure).read_text())
    validator = _validator_filling_defaults(config_schema(structure))
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"config: {'.'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}" for e in errors]
        raise UserError("invalid configuration:\n  " + "\n  ".join(lines))
    return config
