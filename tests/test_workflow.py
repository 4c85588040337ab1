"""The Snakemake workflow: dry run, lint, format, config validation, and a real run of the demo DAG."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clip_flant5.variants import VARIANTS

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snakemake(workdir, *args, timeout=600):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def workdir(tmp_path):
    """A copy of the workflow (Snakemake locks its working directory and writes results/ there)."""
    for name in ("workflow", "config", "envs"):
        shutil.copytree(REPO / name, tmp_path / name)
    return tmp_path


def test_dry_run_and_lint(workdir):
    dry = snakemake(workdir, "-n")
    assert dry.returncode == 0, dry.stderr
    assert "tiny_base" in dry.stdout and "init_model" in dry.stdout
    lint = snakemake(workdir, "--lint")
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_snakefmt_check():
    result = subprocess.run([BIN / "snakefmt", "--check", "workflow/"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_demo_dag_builds_the_tiny_models(workdir):
    run = snakemake(workdir, "--cores", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    model = workdir / "results/models/tiny/untrained"
    config = json.loads((model / "config.json").read_text())
    assert config["architectures"] == ["CLIPT5ForConditionalGeneration"]
    assert config["mm_vision_tower"] == "results/models/tiny-base/vision"
    assert (workdir / "logs/models/tiny/untrained.log").is_file()
    from clip_flant5.checkpoint import load_model

    os.chdir(workdir)  # the configured tower path is relative to the working directory
    try:
        assert load_model(model).vision_tower.image_size == 64
    finally:
        os.chdir(REPO)
    again = snakemake(workdir, "--cores", "2")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.parametrize(
    "change, message",
    [
        ({"models": {"tiny": {"variant": "huge"}}}, "huge"),
        ({"models": {"tiny": {"variant": "tiny", "projektor": "linear"}}}, "projektor"),
        ({"models": {"tiny": {"variant": "tiny", "projector": "mlp_relu"}}}, "mlp_relu"),
        ({"models": {}}, "models"),
    ],
)
def test_invalid_config_is_rejected_with_the_offending_key(workdir, change, message):
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    config.update(change)
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n")
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_schema_lists_exactly_the_registered_variants():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    enum = schema["properties"]["models"]["additionalProperties"]["properties"]["variant"]["enum"]
    assert enum == list(VARIANTS)
