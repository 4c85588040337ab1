"""The Snakemake workflow: dry run, lint, format, config validation, and a real run of the demo DAG."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

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


def test_dry_run_and_lint(workdir):
    dry = snakemake(workdir, "-n")
    assert dry.returncode == 0, dry.stderr
    assert "tiny_base" in dry.stdout and "init_model" in dry.stdout
    lint = snakemake(workdir, "--lint")
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_snakefmt_check():
    result = subprocess.run([BIN / "snakefmt", "--check", "workflow/"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_demo_dag_runs_from_synthetic_data_to_the_tables(workdir):
    run = snakemake(workdir, "--cores", "2", timeout=1500)
    assert run.returncode == 0, run.stderr[-3000:]
    results = workdir / "results"
    # data: flattened, OCR-VQA images fixed, validated
    flatten = json.loads((results / "data/llava_v1_5_mix665k_flattened.report.json").read_text())
    assert flatten["records_out"] > flatten["records_in"] and flatten["malformed"] > 0  # the demo's quirks, counted
    assert json.loads((results / "data/ocr_vqa_fix.json").read_text())["converted"] > 0
    assert json.loads((results / "data/stage2.validation.json").read_text())["missing"]["count"] == 0
    # models: untrained, stage 1 projector, stage 2 checkpoint in the published layout
    assert sorted(torch.load(results / "models/tiny/stage1/mm_projector.bin", weights_only=True)) == [
        "mm_projector.0.bias", "mm_projector.0.weight", "mm_projector.2.bias", "mm_projector.2.weight"]  # fmt: skip
    from clip_flant5.checkpoint import load_model

    os.chdir(workdir)  # the configured tower path is relative to the working directory
    try:
        assert load_model(results / "models/tiny/stage2").vision_tower.image_size == 64
    finally:
        os.chdir(REPO)
    assert (workdir / "logs/models/tiny/stage2.log").is_file()
    # scores, metrics and the tables beside the published rows
    metrics = json.loads((results / "metrics/tiny/winoground.json").read_text())
    assert metrics["model"] == "tiny" and metrics["metric"] == "group"
    table = (results / "tables/main.md").read_text()
    assert "| tiny |" in table and "CLIP-FlanT5-XXL | 46.0 | 47.9 | 85.3" in table
    assert all((results / f"tables/{n}.{e}").is_file() for n in ("main", "genai_bench") for e in ("csv", "tex"))
    # the demo learns: after stages 1 and 2 the tiny model tells pictures that show their text from pictures that
    # do not clearly better than the untrained one (measured: 0.63 against 0.51)
    trained, untrained = (demo_headline(results / "metrics" / model) for model in ("tiny", "tiny-untrained"))
    assert trained > untrained + 0.05 and trained > 0.55, (trained, untrained)
    again = snakemake(workdir, "--cores", "2")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # the report: tables, loss curves, score plots, the configuration and the data lock
    report = snakemake(workdir, "--report", "report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    added = re.findall(r"Adding (\S+) \(", report.stdout + report.stderr)
    for name in ("main.csv", "main.png", "loss.png", "tifa160.png", "config.yaml", "sources.lock.json"):
        assert name in added, (name, added)
    assert added.count("loss.png") == 2  # stage 1 and stage 2
    assert (workdir / "report.html").stat().st_size > 100_000
    assert yaml.safe_load((results / "report/config.yaml").read_text())["models"]["tiny"]["seed"] == 0


# The synthetic benchmarks on which the demo's models are compared: winoground and eqben group scores are 0 for both
# models at this size.
DEMO_BENCHMARKS = ("drawbench", "editbench", "coco_t2i", "tifa160", "pickapic", "genai_bench_527")


def demo_headline(metrics: Path) -> float:
    """Mean headline metric (AUROC, accuracy, pairwise accuracy) of a model over DEMO_BENCHMARKS."""
    values = [json.loads((metrics / f"{name}.json").read_text())["value"] for name in DEMO_BENCHMARKS]
    return sum(values) / len(values)


def test_paper_config_lists_the_real_jobs(workdir):
    dry = snakemake(workdir, "-n", "--configfile", "config/paper.yaml")
    assert dry.returncode == 0, dry.stderr[-3000:]
    out = dry.stdout
    for source in ("coco_train2017", "gqa", "llava_mix665k", "winoground", "seetrue"):
        assert f"results/data/sources/{source}.json" in out
    assert "tiny" not in out  # the demo's models are not merged into the paper's
    for model in ("clip-flant5-xxl-published", "clip-flant5-xl-published"):
        for benchmark in ("winoground", "eqben", "drawbench", "editbench", "coco_t2i", "tifa160", "pickapic"):
            assert f"results/metrics/{model}/{benchmark}.json" in out


@pytest.mark.parametrize(
    "change, message",
    [
        ({"models": {"tiny": {"variant": "huge"}}}, "huge"),
        ({"models": {"tiny": {"variant": "tiny", "projektor": "linear"}}}, "projektor"),
        ({"models": {"tiny": {"variant": "tiny", "projector": "mlp_relu"}}}, "mlp_relu"),
        ({"models": {"tiny": {"variant": "tiny", "stage2": {"projector": "x"}}}}, "models.tiny.stage2.projector"),
        ({"hub": {"revisions": {"google/flan-t5-xl": ""}}}, "revisions"),
        (
            {"scoring": {"models": {"m": {"checkpoint": "x"}}, "benchmarks": ["winoground"], "batch_size": 0}},
            "scoring.batch_size",
        ),
    ],
)
def test_invalid_config_is_rejected_with_the_offending_key(workdir, change, message):
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    config.update(change)
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n")
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
