"""Cluster execution without a cluster: what a config resources block asks Slurm for and how a job starts
(clip_flant5.cluster, unit tests), the workflow's jobs under the slurm site profile (dry runs), the named targets,
and the multi-node launch line run for real with a stand-in `srun`."""

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_workflow import REPO, snakemake

from clip_flant5 import cluster
from clip_flant5.errors import UserError

SLURM_PROFILE = REPO / "profiles/slurm"


def dry_run_jobs(output: str) -> list[dict]:
    """The jobs of a `snakemake -n -p` listing: rule, wildcards, resources and shell command of each."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \S+:\n)", output):
        head = re.match(r"(?:local)?rule (\S+):\n", block)
        if not head:
            continue
        job = {"rule": head.group(1), "wildcards": {}, "resources": {}, "shell": ""}
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("wildcards: "):
                job["wildcards"] = dict(item.split("=", 1) for item in line[len("wildcards: ") :].split(", "))
            elif line.startswith("threads: "):
                job["threads"] = int(line[len("threads: ") :])
            elif line.startswith("resources: "):
                job["resources"] = dict(item.split("=", 1) for item in line[len("resources: ") :].split(", "))
            elif line.startswith("Shell command: "):
                job["shell"] = line[len("Shell command: ") :]
        jobs.append(job)
    return jobs


def find(jobs, rule, **wildcards):
    matches = [j for j in jobs if j["rule"] == rule and all(j["wildcards"].get(k) == v for k, v in wildcards.items())]
    assert len(matches) == 1, f"{rule} {wildcards}: {len(matches)} jobs"
    return matches[0]


def paper_config(workdir, **stage2_resources) -> Path:
    config = yaml.safe_load((workdir / "config/paper.yaml").read_text())
    config["models"]["clip-flant5-xxl"]["stage2"]["resources"].update(stage2_resources)
    path = workdir / "config/paper-test.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


ONE_NODE = {"gpus": 8, "nodes": 1, "cpus_per_gpu": 4, "runtime": 5760, "mem_mb": 512000}
RDZV = '$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1):${CLIP_FLANT5_RDZV_PORT:-29500}'


def test_one_node_asks_for_its_gpus_and_cpus_per_gpu_and_one_copy_of_the_job():
    assert cluster.slurm_resources(ONE_NODE) == {"nodes": 1, "runtime": 5760, "mem_mb": 512000, "gpu": 8,
                                                 "cpus_per_gpu": 4, "tasks_per_gpu": 0}  # fmt: skip
    assert cluster.job_threads(ONE_NODE, cores=512) == 32  # Slurm's --cpus-per-gpu x GPUs, never --cores
    assert cluster.launch_command(ONE_NODE) == "torchrun --standalone --nproc_per_node=8 --module clip_flant5"
    assert cluster.device_check_command(ONE_NODE) == "clip-flant5 check-devices --expect-gpus 8"


def test_several_nodes_run_one_launcher_task_per_node_meeting_at_a_c10d_rendezvous():
    spec = ONE_NODE | {"nodes": 4}
    resources = cluster.slurm_resources(spec)
    assert resources["mpi"] == "srun" and resources["tasks"] == 4 and resources["gres"] == "gpu:8"
    assert "gpu" not in resources and resources["tasks_per_gpu"] == 0
    step = "srun --nodes=4 --ntasks=4 --ntasks-per-node=1 --gres=gpu:8 --kill-on-bad-exit=1 --cpus-per-task=32"
    assert cluster.launch_command(spec) == (
        f"{step} torchrun --nnodes=4 --nproc_per_node=8 --rdzv_id=$SLURM_JOB_ID --rdzv_backend=c10d "
        f"--rdzv_endpoint={RDZV} --module clip_flant5"
    )
    check = "clip-flant5 check-devices --expect-gpus 8"
    assert cluster.device_check_command(spec) == f"{step} {check} && {check}"  # every node, then the report
    assert cluster.smoke_spec(spec)["runtime"] == cluster.SMOKE_RUNTIME_MINUTES and spec["runtime"] == 5760


def test_cpu_jobs_take_their_cpus_or_the_given_cores_and_ask_for_no_gpu():
    assert cluster.slurm_resources({"gpus": 0}) == {"nodes": 1, "runtime": None, "mem_mb": None}
    assert cluster.job_threads({"gpus": 0}, cores=3) == 3 and cluster.job_threads({"cpus": 1}, cores=3) == 1
    assert cluster.job_threads({"gpus": 2}, cores=64) == 1  # no cpus_per_gpu: Slurm gives one CPU
    assert cluster.launch_command({"gpus": 0}) == cluster.CPU_LAUNCH


def test_declared_keys_are_those_some_block_sets_and_runtime_is_all_or_none():
    blocks = {"a.resources": ONE_NODE, "b.resources": {"gpus": 1, "runtime": 60, "mem_mb": 1000}}
    assert cluster.declared_keys(blocks) == ["gpu", "nodes", "tasks_per_gpu", "cpus_per_gpu", "runtime", "mem_mb"]
    assert cluster.declared_keys({"cpu.resources": {"gpus": 0}}) == ["nodes"]  # the profile's defaults apply
    with pytest.raises(UserError, match="`mem_mb` is set in some resources blocks but not in b.resources"):
        cluster.declared_keys({"a.resources": ONE_NODE, "b.resources": {"gpus": 1, "runtime": 60}})


def test_paper_dry_run_under_the_slurm_profile_requests_the_configured_gpus(workdir):
    run = snakemake(workdir, "-n", "-p", "--profile", str(SLURM_PROFILE), "--configfile", "config/paper.yaml")
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = dry_run_jobs(run.stdout)
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    for model in ("clip-flant5-xxl", "clip-flant5-xl"):
        for stage in ("stage1", "stage2"):
            job = find(jobs, f"train_{stage}", model=model)
            wanted = paper["models"][model][stage]["resources"]
            resources = job["resources"]
            assert resources["gpu"] == "8" and wanted["gpus"] == 8
            assert resources["runtime"] == str(wanted["runtime"]) and resources["mem_mb"] == str(wanted["mem_mb"])
            assert resources["cpus_per_gpu"] == str(wanted["cpus_per_gpu"]) and resources["tasks_per_gpu"] == "0"
            assert "mpi" not in resources and "gres" not in resources
            assert resources["slurm_partition"] == "<your-partition>"  # the site template's placeholder
            assert job["shell"].startswith(f"HF_HUB_OFFLINE=1 {cluster.launch_command(wanted)} train")
            # threads = the CPUs Slurm gives the job (--cpus-per-gpu x GPUs); torch splits them over 8 processes
            assert job["threads"] == 8 * wanted["cpus_per_gpu"] and f"--threads {job['threads']} " in job["shell"]
            assert "cpus_per_task" not in resources
    score = [j for j in jobs if j["rule"] == "score"]
    assert len(score) == 4 * 4 * 8  # models x shards x benchmarks
    assert all(j["resources"]["gpu"] == "1" and j["resources"]["runtime"] == "240" for j in score)
    assert all(j["threads"] == 8 and "cpus_per_task" not in j["resources"] for j in score)
    # the base models are fetched once, on the submit host; the jobs get the local snapshots
    fetched = {j["wildcards"]["repo"]: j["shell"] for j in jobs if j["rule"] == "fetch_model"}
    assert sorted(fetched) == ["google/flan-t5-xl", "google/flan-t5-xxl", "openai/clip-vit-large-patch14-336",
                               "zhiqiulin/clip-flant5-xl", "zhiqiulin/clip-flant5-xxl"]  # fmt: skip
    assert "--role base --role tokenizer " in fetched["google/flan-t5-xxl"]
    init = find(jobs, "init_model", model="clip-flant5-xxl")["shell"]
    assert (
        "--vision resources/hub/openai/clip-vit-large-patch14-336 --language resources/hub/google/flan-t5-xxl" in init
    )
    # threads of data jobs come from the config, not capped at this machine's cores (no `cores` in the default
    # profile, which would override the site's)
    assert "--jobs 16 " in find(jobs, "validate_data", stage="stage1")["shell"]
    # CPU jobs keep the profile's default-resources
    assert find(jobs, "flatten")["resources"]["runtime"] == "120"
    assert "gpu" not in find(jobs, "flatten")["resources"]


def test_multi_node_stage2_runs_one_torchrun_per_node_with_c10d_rendezvous(workdir):
    config = paper_config(workdir, nodes=4)
    run = snakemake(workdir, "-n", "-p", "--profile", str(SLURM_PROFILE), "stage2", "gpu_smoke", "--configfile", config)
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = dry_run_jobs(run.stdout)
    job = find(jobs, "train_stage2", model="clip-flant5-xxl")
    resources = job["resources"]
    assert resources["mpi"] == "srun" and resources["nodes"] == "4" and resources["tasks"] == "4"
    assert resources["gres"] == "gpu:8" and "gpu" not in resources and resources["tasks_per_gpu"] == "0"
    spec = yaml.safe_load(config.read_text())["models"]["clip-flant5-xxl"]["stage2"]["resources"]
    assert job["shell"].startswith(f"HF_HUB_OFFLINE=1 {cluster.launch_command(spec)} train --stage 2 ")
    single = find(jobs, "train_stage2", model="clip-flant5-xl")  # still one node
    assert single["shell"].startswith("HF_HUB_OFFLINE=1 torchrun --standalone --nproc_per_node=8 ")
    smoke = find(jobs, "gpu_smoke_job", model="clip-flant5-xxl", stage="stage2")
    assert smoke["resources"]["runtime"] == "10" and smoke["resources"]["gres"] == "gpu:8"
    assert "srun --nodes=4 --ntasks=4 --ntasks-per-node=1" in smoke["shell"]
    assert "clip-flant5 check-devices --expect-gpus 8" in smoke["shell"]


def local_rules(workdir, *configfiles) -> set[str]:
    """The rules Snakemake runs on the submit host (a dry run prints local and cluster jobs alike)."""
    code = (
        "from pathlib import Path\n"
        "from snakemake.api import SnakemakeApi\n"
        "from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings\n"
        "with SnakemakeApi(OutputSettings(quiet={'all'})) as api:\n"
        "    wf = api.workflow(ResourceSettings(), ConfigSettings(configfiles=[Path(p) for p in %r]),\n"
        "                      StorageSettings(), snakefile=Path('workflow/Snakefile'), workdir=Path('.'))\n"
        "    print(' '.join(sorted(wf._workflow._localrules)))\n"
    ).replace("%r", repr(list(configfiles)))
    run = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return set(run.stdout.split())


def test_published_checkpoints_to_tables_without_training(workdir):
    run = snakemake(workdir, "-n", "-p", "--profile", str(SLURM_PROFILE), "--configfile", "config/published.yaml")
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = dry_run_jobs(run.stdout)
    assert {j["rule"] for j in jobs} == {"fetch_model", "fetch_source", "benchmark_pairs", "scoring_settings", "score",
                                         "merge_scores", "evaluate", "plot_correlation", "tables", "run_record",
                                         "all"}  # fmt: skip
    roles = {
        j["wildcards"]["repo"]: re.findall(r"--role (\S+)", j["shell"]) for j in jobs if j["rule"] == "fetch_model"
    }
    assert roles == {"zhiqiulin/clip-flant5-xxl": ["checkpoint"], "zhiqiulin/clip-flant5-xl": ["checkpoint"],
                     "google/flan-t5-xxl": ["tokenizer"], "google/flan-t5-xl": ["tokenizer"]}  # fmt: skip
    sources = {j["wildcards"]["source"] for j in jobs if j["rule"] == "fetch_source"}
    assert sources == {"winoground", "eqben", "seetrue", "tifa160", "pickapic", "genai_bench_1600"}  # no training data
    score = [j for j in jobs if j["rule"] == "score"]
    assert len(score) == 2 * 4 * 8 and all(j["resources"]["gpu"] == "1" for j in score)
    shell = find(jobs, "score", scored="clip-flant5-xxl-published", benchmark="genai_bench_1600", i="0")["shell"]
    assert shell.startswith("HF_HUB_OFFLINE=1 clip-flant5 score --model resources/hub/zhiqiulin/clip-flant5-xxl ")
    assert "--tokenizer resources/hub/google/flan-t5-xxl " in shell
    assert "clip-flant5-xxl-published=vqascore-clip-flant5-xxl" in find(jobs, "tables")["shell"]
    assert {"fetch_model", "fetch_source"} <= local_rules(workdir, "config/published.yaml")


def test_data_fetches_can_run_as_cluster_jobs(workdir):
    downloads = {"fetch_source", "fetch_ocrvqa_images"}
    assert {"fetch_model", *downloads} <= local_rules(workdir, "config/paper.yaml")  # the default: submit host
    config = yaml.safe_load((workdir / "config/paper.yaml").read_text())
    config["data"]["fetch_on"] = "cluster"
    (workdir / "config/paper-cluster.yaml").write_text(yaml.safe_dump(config))
    local = local_rules(workdir, "config/paper-cluster.yaml")
    assert "fetch_model" in local and not downloads & local


def test_stage2_can_start_from_the_published_stage1_projector(workdir):
    config = yaml.safe_load((workdir / "config/paper.yaml").read_text())
    config["models"]["clip-flant5-xxl"]["stage1"]["projector"] = "published"
    config["models"]["clip-flant5-xl"]["stage1"]["projector"] = "zhiqiulin/clip-flant5-xl-stage-1"
    (workdir / "config/paper-test.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(workdir, "-n", "-p", "stage2", "--configfile", "config/paper-test.yaml")
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = dry_run_jobs(run.stdout)
    assert "train_stage1" not in {j["rule"] for j in jobs}
    for model in ("xxl", "xl"):
        repo = f"zhiqiulin/clip-flant5-{model}-stage-1"
        assert "--role projector" in find(jobs, "fetch_model", repo=repo)["shell"]
        assert f"--projector resources/hub/{repo} " in find(jobs, "train_stage2", model=f"clip-flant5-{model}")["shell"]


def test_ablation_variants_train_with_their_own_stage1_settings(workdir):
    """Each stage's settings reach its job as a file, resolved: the variant's departures over the recipe."""
    models = ("clip-flant5-xxl", "clip-flant5-xxl-no-split-text", "clip-t5-xxl")
    files = [f"results/settings/{model}/stage1.json" for model in models]
    run = snakemake(workdir, "--cores", "1", *files, "--configfile", "config/paper.yaml", "config/ablations.yaml")
    assert run.returncode == 0, run.stderr[-3000:]
    settings = {model: json.loads((workdir / path).read_text()) for model, path in zip(models, files, strict=True)}
    assert settings["clip-flant5-xxl"]["template"] == "t5_plain_split_text"
    assert (
        settings["clip-flant5-xxl"]["global_batch_size"] == 256 and settings["clip-flant5-xxl"]["deepspeed"] == "zero2"
    )
    assert settings["clip-flant5-xxl-no-split-text"]["template"] == "t5_plain"
    assert settings["clip-t5-xxl"]["template"] == "t5_plain_split_text"
    assert settings["clip-t5-xxl"]["global_batch_size"] == 160
    dry = snakemake(workdir, "-n", "-p", "stage1", "--configfile", "config/paper.yaml", "config/ablations.yaml")
    job = find(dry_run_jobs(dry.stdout), "train_stage1", model="clip-t5-xxl")
    assert "--settings results/settings/clip-t5-xxl/stage1.json " in job["shell"] and job["resources"]["gpu"] == "8"


def test_runtime_set_for_some_models_only_is_a_config_error(workdir):
    config = yaml.safe_load((workdir / "config/paper.yaml").read_text())
    del config["models"]["clip-flant5-xl"]["stage2"]["resources"]["mem_mb"]
    (workdir / "config/paper-test.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(workdir, "-n", "--configfile", "config/paper-test.yaml")
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "`mem_mb` is set in some resources blocks but not in models.clip-flant5-xl.stage2.resources" in output


def test_demo_jobs_run_on_cpu_without_gpu_requests(workdir):
    run = snakemake(workdir, "-n", "-p", "--cores", "3", "stage2", "gpu_smoke")
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = dry_run_jobs(run.stdout)
    train = find(jobs, "train_stage2", model="tiny")
    assert train["shell"].startswith("HF_HUB_OFFLINE=1 DS_ACCELERATOR=cpu python -m clip_flant5 train --stage 2")
    assert not {"gpu", "gres", "mpi", "tasks_per_gpu"} & set(train["resources"])
    assert train["threads"] == 3 and "--threads 3 " in train["shell"]  # the cores given to Snakemake
    assert "--expect-gpus 0" in find(jobs, "gpu_smoke_job", model="tiny", stage="stage1")["shell"]


@pytest.mark.parametrize(
    "targets, rules",
    [
        (["data"], {"make_demo_data", "flatten", "validate_data"}),
        (["stage1"], {"train_stage1"}),
        (["stage2_tiny"], {"train_stage1", "train_stage2"}),
        (["scores_tiny-untrained"], {"score", "evaluate"}),
        (["benchmark_winoground"], {"score", "evaluate"}),
        (["tables"], {"tables", "train_stage2"}),
        (["gpu_smoke"], {"gpu_smoke_job"}),
    ],
)
def test_named_targets(workdir, targets, rules):
    run = snakemake(workdir, "-n", *targets)
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = dry_run_jobs(run.stdout)
    assert rules <= {j["rule"] for j in jobs}
    if targets == ["scores_tiny-untrained"]:
        assert "train_stage2" not in {j["rule"] for j in jobs}  # the untrained model needs no training
        assert {j["wildcards"]["benchmark"] for j in jobs if j["rule"] == "evaluate"} == set(
            yaml.safe_load((REPO / "config/config.yaml").read_text())["scoring"]["benchmarks"]
        )
    if targets == ["benchmark_winoground"]:
        assert {j["wildcards"]["benchmark"] for j in jobs if j["rule"] == "score"} == {"winoground"}


def test_default_profile_does_not_rerun_training_after_a_rule_edit():
    profile = yaml.safe_load((REPO / "workflow/profiles/default/profile.yaml").read_text())
    assert "code" not in profile["rerun-triggers"] and "params" in profile["rerun-triggers"]


def write_executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


# Stand-ins for Slurm inside an allocation of two nodes that are both this machine: `srun` starts its
# --ntasks copies of the command (SLURM_PROCID set) and fails if one fails; `scontrol show hostnames` lists them.
FAKE_SRUN = """#!/usr/bin/env bash
ntasks=1
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in --ntasks=*) ntasks=${1#--ntasks=} ;; esac
  echo "srun option: $1" >&2
  shift
done
pids=()
for ((i = 0; i < ntasks; i++)); do SLURM_PROCID=$i SLURM_NODEID=$i "$@" & pids+=($!); done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
[[ $1 == show && $2 == hostnames ]] || exit 2
echo localhost
echo localhost
"""


@pytest.mark.slow
def test_multi_node_launch_line_trains_across_two_nodes(workdir):
    """The generated multi-node command, run with stand-in srun/scontrol: two torchrun agents meet at the c10d
    rendezvous on the first host and train stage 1 as one 2-process job."""
    bin_dir = workdir / "fake-slurm"
    bin_dir.mkdir()
    write_executable(bin_dir / "srun", FAKE_SRUN)
    write_executable(bin_dir / "scontrol", FAKE_SCONTROL)
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    config["data"]["demo"]["scale"] = 0.25
    stage1 = config["models"]["tiny"]["stage1"]
    stage1["resources"] = {"gpus": 1, "nodes": 2}
    stage1["settings"].update(max_steps=3, global_batch_size=8, per_device_batch_size=4)
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(config))
    env_path = f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {
        **os.environ,
        "PATH": env_path,
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "localhost,localhost",
        "CLIP_FLANT5_RDZV_PORT": "29731",
        "CUDA_VISIBLE_DEVICES": "",
    }
    run = subprocess.run(
        ["timeout", "-k", "10", "600", sys.executable, "-m", "snakemake", "--cores", "2", "stage1"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    log = workdir / "logs/models/tiny/stage1.log"
    assert run.returncode == 0, run.stderr[-3000:] + (log.read_text()[-3000:] if log.exists() else "")
    text = log.read_text()
    assert "srun option: --ntasks-per-node=1" in text
    training = (workdir / "results/models/tiny/stage1/training.json").read_text()
    assert '"world_size": 2' in training
    assert (workdir / "results/models/tiny/stage1/mm_projector.bin").is_file()
