"""The workflow's configuration schema: completed from the package's registries and settings, checked with defaults
filled in (clip_flant5.workflow_config), without running Snakemake."""

import copy
from pathlib import Path

import pytest
import yaml

from clip_flant5.errors import UserError
from clip_flant5.workflow_config import validate_config

REPO = Path(__file__).resolve().parents[1]
STRUCTURE = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())


def demo_config() -> dict:
    return yaml.safe_load((REPO / "config/config.yaml").read_text())


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "published.yaml"])
def test_shipped_configs_are_valid(name):
    validate_config(yaml.safe_load((REPO / "config" / name).read_text()), STRUCTURE)


def test_scoring_settings_take_their_defaults_from_the_package():
    from clip_flant5.vqascore import ScoreSettings

    config = validate_config(demo_config(), STRUCTURE)
    assert config["scoring"]["batch_size"] == ScoreSettings().batch_size
    assert config["scoring"]["question_template"] == ScoreSettings().question_template
    # training settings are not filled in: an unset one is the stage's published value, resolved by TrainSettings
    assert "warmup_ratio" not in config["models"]["tiny"]["stage1"]["settings"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda c: c["models"]["tiny"].update(variant="huge"),
            "models.tiny.variant: 'huge' is not one of ['clip-flant5-xxl'",
        ),
        (lambda c: c["scoring"].update(benchmarks=["winogrand"]), "scoring.benchmarks.0: 'winogrand' is not one of"),
        (lambda c: c["scoring"].update(batch_size=-1), "scoring.batch_size: -1 is less than the minimum of 1"),
        (
            lambda c: c["scoring"].update(score="mean"),
            "scoring.score: 'mean' is not one of ['exp-mean-ce', 'first-token']",
        ),
        (lambda c: c["models"]["tiny"]["stage2"]["settings"].update(lr=1), "'lr' was unexpected"),
        (
            lambda c: c["models"]["tiny"]["stage2"]["settings"].update(epochs=0),
            "stage2.settings.epochs: 0 is less than",
        ),
    ],
)
def test_bad_values_are_named_with_their_key(edit, message):
    config = copy.deepcopy(demo_config())
    edit(config)
    with pytest.raises(UserError, match="invalid configuration") as error:
        validate_config(config, STRUCTURE)
    assert message in str(error.value)
