"""The workflow on a real Slurm cluster through the slurm executor plugin and the site profile (profiles/slurm).

Needs a cluster with accounting (sacct) and GPU gres; CI starts a one-node one on localhost with two fake GPUs
(.ci/slurm/up.sh). Skipped where no cluster answers. Every call is wrapped in `timeout -k`: the plugin can poll
forever (e.g. when sacct has no accounting) and then ignores SIGTERM.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

PLACEHOLDERS = {"slurm_partition": "<your-partition>", "slurm_account": "<your-account>"}
# What the test config asks for (the two GPU rules get different limits, so each is checked against its own).
TRAIN_RESOURCES = {"gpus": 1, "cpus_per_gpu": 1, "runtime": 10, "mem_mb": 2000}
SCORE_RESOURCES = {"gpus": 1, "cpus_per_gpu": 1, "runtime": 9, "mem_mb": 1500}
STAGE1 = "results/models/tiny/stage1"
SHARD = "results/scores/{model}/winoground/shard-0-of-1.jsonl"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE")

pytestmark = pytest.mark.slow


def run(*args, timeout=30, **kwargs):
    """`args` under `timeout -k 10`; a hung command is killed, never waited on."""
    return subprocess.run(
        ["timeout", "-k", "10", str(timeout), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout + 30,
        **kwargs,
    )


def _cluster():
    """(partition, account) of the cluster this machine submits to; skips the module where there is none."""
    missing = [tool for tool in ("sbatch", "sinfo", "sacct", "squeue", "sacctmgr") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"Slurm client tools not installed ({', '.join(missing)}); CI starts a cluster: .ci/slurm/up.sh")
    nodes = run("sinfo", "-h", "-N", "-o", "%P|%T|%G")
    if nodes.returncode != 0 or not nodes.stdout.strip():
        why = (nodes.stderr or nodes.stdout).strip()[:200]
        pytest.skip(f"no Slurm cluster answers (sinfo: {why}); CI starts one: .ci/slurm/up.sh")
    rows = [line.split("|") for line in nodes.stdout.split()]
    usable = [r for r in rows if re.match(r"(idle|mixed|allocated|completing)", r[1]) and "gpu" in r[2]]
    if not usable:
        pytest.skip(f"no Slurm node that is up and has GPU gres: {rows}")
    defaults = [r[0] for r in usable if r[0].endswith("*")]
    partition = (defaults or [usable[0][0]])[0].rstrip("*")
    accounting = run("sacct", "-n", "-X", "-S", "now-1minutes")
    if accounting.returncode != 0 or "disabled" in accounting.stdout + accounting.stderr:
        why = (accounting.stdout + accounting.stderr).strip()[:200]
        pytest.skip(f"sacct does not answer, and the plugin polls job states with it: {why}")
    user = os.environ.get("USER") or run("id", "-un").stdout.strip()
    assoc = run("sacctmgr", "-n", "-P", "show", "user", user, "format=defaultaccount")
    account = assoc.stdout.strip().splitlines()[0] if assoc.returncode == 0 and assoc.stdout.strip() else ""
    if not account:
        pytest.skip(f"user {user} has no Slurm account (sacctmgr: {assoc.stderr.strip()[:200]})")
    return partition, account


@pytest.fixture(scope="module")
def cluster():
    return _cluster()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, cluster):
    """A copy of the workflow (as in test_workflow.py), a test config and a profile made from the site template."""
    partition, account = cluster
    root = tmp_path_factory.mktemp("slurm")
    for name in ("workflow", "config", "envs"):
        shutil.copytree(REPO / name, root / name)

    profile = yaml.safe_load((REPO / "profiles/slurm/profile.yaml").read_text())
    assert profile["executor"] == "slurm"
    defaults = profile["default-resources"]
    for key, placeholder in PLACEHOLDERS.items():
        assert defaults.get(key) == placeholder, f"the site template's default-resources lost {key}: {placeholder}"
    defaults.update(slurm_partition=partition, slurm_account=account)
    # first status check after 1 s instead of 40 s; keep every job's Slurm log to read on failure
    profile.update({"slurm-init-seconds-before-status-checks": 1, "slurm-keep-successful-logs": True})
    (root / "profile").mkdir()
    (root / "profile/profile.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["data"]["demo"]["scale"] = 0.1
    tiny = config["models"]["tiny"]
    tiny["stage1"]["settings"]["max_steps"] = 2
    tiny["stage1"]["resources"] = dict(TRAIN_RESOURCES)
    tiny["stage2"]["resources"] = dict(TRAIN_RESOURCES)  # not run; resource keys must agree across blocks
    config["scoring"]["models"] = {"tiny-untrained": {"checkpoint": "results/models/tiny/untrained"}}
    config["scoring"]["benchmarks"] = ["winoground"]
    config["scoring"]["resources"] = dict(SCORE_RESOURCES)
    (root / "slurm-test.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    # The failing run scores a checkpoint folder that exists but holds no model.
    config["scoring"]["models"]["broken"] = {"checkpoint": "results/models/broken"}
    (root / "slurm-broken.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "results/models/broken").mkdir(parents=True)
    (root / "results/models/broken/config.json").write_text("this is not a checkpoint\n")
    return root


def snakemake(workdir, configfile, *targets, timeout):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    started = datetime.now() - timedelta(seconds=2)
    result = run(
        sys.executable, "-m", "snakemake", *targets, "--profile", "profile", "--configfile", configfile,
        timeout=timeout, cwd=workdir, env=env,
    )  # fmt: skip
    output = result.stdout + result.stderr
    run_ids = re.findall(r"SLURM run ID: (\S+)", output)
    # `timeout` exits 124 (TERM worked) or 137; after `-k` its KILL also hits itself (-9)
    if result.returncode in (124, 137, -9):  # killed: cancel what it left in the queue, drop its locks
        for run_id in run_ids:
            run("scancel", "--name", run_id)
        shutil.rmtree(Path(workdir, ".snakemake/locks"), ignore_errors=True)
        raise AssertionError(f"snakemake hung; killed after {timeout} s:\n{output[-4000:]}")
    assert len(run_ids) == 1, output[-4000:]
    return result.returncode, output, slurm_jobs(run_ids[0], started)


def slurm_jobs(run_id, started):
    """rule -> [sacct rows] of the jobs the plugin submitted under `run_id` (its sbatch --job-name)."""
    fields = ["JobID", "JobName", "Comment", "State", "AllocTRES", "Timelimit", "ReqMem"]
    for _ in range(20):  # slurmctld hands finished jobs to slurmdbd asynchronously
        result = run(
            "sacct", "-X", "-n", "-P", "--name", run_id, "-S", started.strftime("%Y-%m-%dT%H:%M:%S"),
            f"--format={','.join(fields)}",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        rows = [dict(zip(fields, line.split("|"), strict=True)) for line in result.stdout.splitlines() if line]
        if rows and all(row["State"].split()[0] in TERMINAL for row in rows):
            break
        time.sleep(0.5)
    jobs = {}
    for row in rows:
        rule = re.match(r"rule_(\w+?)(_wildcards_.*)?$", row["Comment"])
        assert rule, f"sacct has no rule in the job comment (AccountingStoreFlags=job_comment?): {row}"
        jobs.setdefault(rule[1], []).append(row)
    return jobs


def tres(row):
    return dict(item.split("=", 1) for item in row["AllocTRES"].split(",") if item)


def minutes(timelimit):
    """sacct's [D-]HH:MM:SS as minutes."""
    days, _, clock = timelimit.rpartition("-")
    hours, mins, secs = map(int, clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + mins + secs / 60


def megabytes(value):
    """sacct's ReqMem ("2000M", "2G", older "2000Mn") in MB."""
    number, unit = re.match(r"([\d.]+)([KMGT]?)", value).groups()
    return float(number) * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2, "": 1}[unit]


def assert_gpu_job(jobs, rule, spec, output):
    assert len(jobs.get(rule, [])) == 1, f"one {rule} job expected in sacct: {jobs}\n{output[-3000:]}"
    row = jobs[rule][0]
    assert row["State"] == "COMPLETED", row
    allocated = tres(row)
    assert allocated.get("gres/gpu") == str(spec["gpus"]), row  # submitted with --gpus=1
    assert allocated.get("cpu") == str(spec["gpus"] * spec["cpus_per_gpu"]), row
    assert minutes(row["Timelimit"]) == spec["runtime"], row
    assert megabytes(row["ReqMem"]) == spec["mem_mb"], row


def test_demo_dag_runs_on_slurm_with_gpu_requests(workdir):
    targets = [STAGE1, SHARD.format(model="tiny-untrained")]
    rc, output, jobs = snakemake(workdir, "slurm-test.yaml", *targets, timeout=420)
    assert rc == 0, output[-4000:]

    # every step ran as a Slurm job, and finished
    for rule in ("make_demo_data", "tiny_base", "init_model", "validate_data", "train_stage1", "benchmark_pairs"):
        assert rule in jobs, f"{rule} did not go through Slurm: {sorted(jobs)}"
    assert all(row["State"] == "COMPLETED" for rows in jobs.values() for row in rows), jobs
    # the GPU rules asked for what the config says; the data rules for no GPU
    assert_gpu_job(jobs, "train_stage1", TRAIN_RESOURCES, output)
    assert_gpu_job(jobs, "score", SCORE_RESOURCES, output)
    for rule in ("make_demo_data", "tiny_base", "validate_data"):
        assert "gres/gpu" not in tres(jobs[rule][0]), jobs[rule]

    # the artefacts
    assert (workdir / STAGE1 / "mm_projector.bin").is_file()
    pairs = (workdir / "results/benchmarks/winoground/pairs.jsonl").read_text().splitlines()
    scores = [json.loads(line) for line in (workdir / SHARD.format(model="tiny-untrained")).read_text().splitlines()]
    assert len(scores) == len(pairs) > 0
    # the profile keeps the Slurm logs of successful jobs
    job_id = jobs["train_stage1"][0]["JobID"]
    assert (workdir / f".snakemake/slurm_logs/rule_train_stage1/tiny/{job_id}.log").is_file()


def test_failing_job_fails_the_run_and_is_reported(workdir):
    profile = yaml.safe_load((workdir / "profile/profile.yaml").read_text())
    attempts = 1 + profile.get("retries", 0)
    rc, output, jobs = snakemake(workdir, "slurm-broken.yaml", SHARD.format(model="broken"), timeout=300)

    assert rc != 0, output[-4000:]
    assert "Error in rule score" in output, output[-4000:]
    failed = jobs.get("score", [])
    assert [row["State"] for row in failed] == ["FAILED"] * attempts, jobs  # each attempt: one job, failed
    assert all(tres(row).get("gres/gpu") == "1" for row in failed), failed
    for row in failed:  # Snakemake names the failed Slurm job and keeps its log
        assert f"SLURM-job '{row['JobID']}' failed" in output, output[-4000:]
    assert not (workdir / SHARD.format(model="broken")).exists()
