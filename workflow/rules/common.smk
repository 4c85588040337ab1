import copy
import json
import os
import re
from pathlib import Path

import yaml
from clip_flant5.variants import get_variant
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# A --configfile replaces the demo configuration instead of being merged into it (Snakemake merges nested
# dicts, which would add the demo's models to the paper's); --config values still apply on top.
if workflow.overwrite_configfiles:
    overrides = copy.deepcopy(workflow.config_settings.overwrite_config)
    config.clear()
    config.update(overrides)

validate(config, schema="../schemas/config.schema.yaml")

MODELS = config["models"]
DATA = config["data"]
HUB = config["hub"]
for _name, _spec in MODELS.items():
    if "projector" in _spec.get("stage2", {}):
        raise WorkflowError(
            f"config: models.{_name}.stage2.projector: a stage-1 projector to start from goes under stage1"
        )
DATA_ROOT = DATA["root"]
TRAIN_ROOT = f"{DATA_ROOT}/train"
# The data manifest and the locks of the checkout the workflow runs from (not of wherever the package is installed).
CONFIG_DIR = Path(workflow.basedir).parent / "config"
SOURCES_MANIFEST = str(CONFIG_DIR / "sources.yaml")
SOURCES_LOCK = str(CONFIG_DIR / "sources.lock.json")
MODELS_LOCK = str(CONFIG_DIR / "models.lock.json")
SOURCES = yaml.safe_load(Path(SOURCES_MANIFEST).read_text())["sources"]
# Values that name files in this workflow (inputs); anything else is a Hugging Face hub id.
LOCAL_PREFIXES = ("results/", "resources/", "./", "../")
# Sources each prepared dataset needs when data comes from the manifest (config/sources.yaml).
STAGE1_SOURCES = ["llava_pretrain"]
STAGE2_IMAGE_SOURCES = ["coco_train2017", "gqa", "ocr_vqa", "textvqa", "vg"]


wildcard_constraints:
    model="|".join(re.escape(name) for name in MODELS),
    source="|".join(re.escape(name) for name in SOURCES),
    stage="stage1|stage2",


def is_local(path):
    return path.startswith(LOCAL_PREFIXES) or Path(path).is_absolute()


# -- hub models -----------------------------------------------------------------------------
# Hub ids in the config (checkpoints, tokenizers, base models, stage-1 projectors) are fetched once by the local
# rule fetch_model into HUB["root"]/<repo>; the jobs get that folder and run with HF_HUB_OFFLINE=1.


def model_path(value):
    """Where a job finds a model named in the config: the path itself, or the fetched snapshot of a hub id."""
    return value if is_local(value) else f"{HUB['root']}/{value}"


def model_inputs(**values):
    """Rule inputs of models named in the config: a path built here, or the fetch record of a hub id."""
    return {
        key: value if is_local(value) else f"results/hub/{value}.json"
        for key, value in values.items()
        if value is not None
    }


def base_models(model):
    """(vision, language) of a configured model: its own, else its variant's."""
    spec, variant = MODELS[model], get_variant(MODELS[model]["variant"])
    vision, language = spec.get("vision", variant.vision), spec.get(
        "language", variant.language
    )
    if vision is None or language is None:
        raise WorkflowError(
            f"config: models.{model}: variant {variant.name} names no base models: set `vision` and `language`"
        )
    return vision, language


def stage1_projector(model):
    """The projector stage 2 starts from: a configured one (hub id or path; `published` = the variant's
    published stage-1 projector), else None (stage 1 trains it here)."""
    value = stage_config(model, "stage1").get("projector")
    if value != "published":
        return value
    variant = get_variant(MODELS[model]["variant"])
    if variant.published_stage1 is None:
        raise WorkflowError(
            f"config: models.{model}.stage1.projector: variant {variant.name} has no published stage-1 projector; "
            "give a hub id or a path"
        )
    return variant.published_stage1


def hub_roles():
    """Hub id -> what the run uses it as (clip_flant5.download.snapshot.ROLES: decides the files fetched)."""
    roles = {}
    uses = [
        (s["checkpoint"], "checkpoint") for s in config["scoring"]["models"].values()
    ]
    uses += [
        (s["tokenizer"], "tokenizer")
        for s in config["scoring"]["models"].values()
        if "tokenizer" in s
    ]
    for model in MODELS:
        if stage1_projector(model) is not None:
            uses.append((stage1_projector(model), "projector"))
        uses += [(path, "base") for path in base_models(model)]
    for value, role in uses:
        if not is_local(value):
            roles.setdefault(value, set()).add(role)
    return {repo: sorted(r) for repo, r in roles.items()}


def fetch_model_args(wildcards):
    revision = HUB["revisions"].get(wildcards.repo, "main")
    roles = " ".join(f"--role {role}" for role in HUB_MODELS[wildcards.repo])
    return f"--revision {revision} {roles}"


# -- data ---------------------------------------------------------------------------------


def data_ready(*sources):
    """What makes `sources` present: the demo corpus, or one fetch record per source."""
    if DATA["source"] == "demo":
        return [f"{DATA_ROOT}/manifest.json"]
    return [f"results/data/sources/{name}.json" for name in sources]


def ocrvqa_images_ready():
    """The OCR-VQA images: part of the demo corpus, or downloaded from the URLs of its dataset.json."""
    if DATA["source"] == "demo":
        return data_ready("ocr_vqa")
    return "results/data/ocr_vqa_images.json"


def flattened_json():
    if DATA["flattened"] == "published":
        return f"{TRAIN_ROOT}/llava_v1_5_mix665k_flattened_multi_turn.json"
    return "results/data/llava_v1_5_mix665k_flattened.json"


def validation_inputs(wildcards):
    if wildcards.stage == "stage1":
        return {"ready": data_ready(*STAGE1_SOURCES)}
    inputs = {
        "ready": data_ready(*STAGE2_IMAGE_SOURCES),
        "ocr_fix": "results/data/ocr_vqa_fix.json",
    }
    if DATA["flattened"] == "published":
        inputs["flattened_ready"] = data_ready("llava_mix665k_flattened")
    else:
        inputs["flattened"] = flattened_json()
    return inputs


def stage_paths(stage):
    """(records JSON, image root) of a training stage's data."""
    if stage == "stage1":
        return (
            f"{TRAIN_ROOT}/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json",
            f"{TRAIN_ROOT}/LLaVA-Pretrain/images",
        )
    return flattened_json(), TRAIN_ROOT


def validation_paths(wildcards):
    return stage_paths(wildcards.stage)


def image_root(stage):
    return stage_paths(stage)[1]


def flag(name, on):
    return f"--{name}" if on else ""


# -- models ---------------------------------------------------------------------------------


def base_model_inputs(wildcards):
    """The base checkpoints (vision/language) a model is built from, as rule inputs."""
    vision, language = base_models(wildcards.model)
    return model_inputs(vision=vision, language=language)


def init_model_args(wildcards):
    """clip-flant5 init-model arguments of a configured model (the variant fills the rest)."""
    spec = MODELS[wildcards.model]
    vision, language = base_models(wildcards.model)
    args = [f"--variant {spec['variant']}", f"--seed {spec['seed']}"]
    args += [f"--vision {model_path(vision)}", f"--language {model_path(language)}"]
    if "projector" in spec:
        args.append(f"--projector {spec['projector']}")
    return " ".join(args)


# Memory (MB) init_model needs to load the base models in bf16 and write the checkpoint (~4x the weights).
INIT_MEMORY_MB = {
    "clip-flant5-xxl": 96000,
    "clip-flant5-xxl-no-split-text": 96000,
    "clip-t5-xxl": 96000,
    "clip-flant5-xl": 32000,
    "tiny": 2000,
}


def init_memory_mb(wildcards):
    return INIT_MEMORY_MB[MODELS[wildcards.model]["variant"]]


def stage_config(model, stage):
    return MODELS[model].get(stage, {})


HUB_MODELS = hub_roles()


wildcard_constraints:
    repo="|".join(re.escape(repo) for repo in HUB_MODELS),


def stage2_inputs(wildcards):
    """The untrained model, the data, and the projector stage 2 starts from (stage 1's, or a configured one)."""
    projector = stage1_projector(wildcards.model)
    return {
        "model": f"results/models/{wildcards.model}/untrained",
        "data": "results/data/stage2.json",
        **model_inputs(
            projector=projector or f"results/models/{wildcards.model}/stage1"
        ),
    }


def stage2_projector(wildcards):
    projector = stage1_projector(wildcards.model)
    return (
        model_path(projector)
        if projector
        else f"results/models/{wildcards.model}/stage1"
    )


def train_settings(stage):
    """The stage's TrainSettings as JSON: the configured values over the variant's own (e.g. stage 1 without
    split text); unset keys take the published recipe."""

    def settings(wildcards):
        variant = get_variant(MODELS[wildcards.model]["variant"])
        values = variant.training_settings(int(stage[-1]))
        values.update(stage_config(wildcards.model, stage).get("settings", {}))
        return json.dumps(values, sort_keys=True)

    return settings


def stage_resources(model, stage):
    return stage_config(model, stage).get("resources", {})


# -- cluster resources ----------------------------------------------------------------------

# Every resource a GPU job may set; a job leaves out (None) those that do not apply to it.
CLUSTER_RESOURCE_KEYS = (
    "gpu",
    "gres",
    "nodes",
    "tasks",
    "mpi",
    "tasks_per_gpu",
    "cpus_per_gpu",
    "runtime",
    "mem_mb",
)
# torchrun's c10d rendezvous port on the first node of a multi-node job (CLIP_FLANT5_RDZV_PORT overrides).
RENDEZVOUS_PORT = 29500


def cluster_resources(spec):
    """The slurm executor plugin's resources for a config `resources` block.

    One node: `gpu` (the plugin's total, --gpus) and one task; `tasks_per_gpu: 0` stops the plugin from starting
    one copy of the job per GPU (its issues 316/459). Several nodes: one launcher task per node (`mpi: srun`,
    `tasks` = nodes, `gres` per node); the rule's command starts torchrun on each node itself. Keys the config
    leaves unset (runtime, mem_mb, cpus_per_gpu) are left to the partition's defaults.
    """
    gpus, nodes = spec.get("gpus", 0), spec.get("nodes", 1)
    resources = {
        "nodes": nodes,
        "runtime": spec.get("runtime"),
        "mem_mb": spec.get("mem_mb"),
    }
    if gpus:
        resources.update(cpus_per_gpu=spec.get("cpus_per_gpu"), tasks_per_gpu=0)
        if nodes > 1:
            resources.update(mpi="srun", tasks=nodes, gres=f"gpu:{gpus}")
        else:
            resources["gpu"] = gpus
    return resources


def job_resources(spec_of, blocks):
    """`resources:` of a rule whose config block is `spec_of(wildcards)`, one of `blocks` (name -> block).

    Only keys some block sets are declared, so a rule without them keeps the profile's default-resources.
    Snakemake cannot unset `runtime`/`mem_mb` for one job of a rule, hence all blocks set them or none does.
    """
    keys = {
        key
        for block in blocks.values()
        for key, value in cluster_resources(block).items()
        if value is not None
    }
    for key in ("runtime", "mem_mb"):
        unset = [name for name, block in blocks.items() if key not in block]
        if key in keys and unset:
            raise WorkflowError(
                f"config: `{key}` is set in some resources blocks but not in {', '.join(unset)}: "
                f"set it in every one (or in none, to use the profile's default-resources)"
            )

    def value(key):
        return lambda wildcards: cluster_resources(spec_of(wildcards)).get(key)

    return {key: value(key) for key in CLUSTER_RESOURCE_KEYS if key in keys}


def training_blocks(stages):
    return {
        f"models.{model}.{stage}.resources": stage_resources(model, stage)
        for model in MODELS
        for stage in stages
    }


def training_resources(stage):
    return job_resources(
        lambda wildcards: stage_resources(wildcards.model, stage),
        training_blocks([stage]),
    )


def scoring_resources():
    return job_resources(
        lambda wildcards: SCORING["resources"],
        {"scoring.resources": SCORING["resources"]},
    )


def job_threads(spec):
    """Threads of a training or scoring job (torch splits them among the job's processes on a node).

    A GPU job gets its CPUs from Slurm as `cpus_per_gpu` x GPUs (one mechanism: the plugin then passes
    --cpus-per-gpu, never --cpus-per-task with it); without `cpus_per_gpu`, one. A CPU job: `cpus`, else the
    cores given to Snakemake (the demo: `snakemake --cores 2`).
    """
    gpus = spec.get("gpus", 0)
    if gpus:
        return gpus * spec.get("cpus_per_gpu", 1) if "cpus_per_gpu" in spec else 1
    return spec.get("cpus", given_cores())


def given_cores():
    """--cores; 1 in the modes that run no job and take no --cores (--report, --summary)."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


def training_threads(stage):
    return lambda wildcards: job_threads(stage_resources(wildcards.model, stage))


def scoring_threads():
    return lambda wildcards: job_threads(SCORING["resources"])


def node_step(spec):
    """srun of one task per node of a multi-node job, with the node's GPUs and CPUs (a step gets neither by
    default: its task would be pinned to one CPU)."""
    nodes, gpus = spec["nodes"], spec["gpus"]
    step = f"srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --gres=gpu:{gpus} --kill-on-bad-exit=1"
    if "cpus_per_gpu" in spec:
        step += f" --cpus-per-task={spec['cpus_per_gpu'] * gpus}"
    return step


def torchrun_command(spec):
    """How a training job starts its processes: one per GPU, over one or several nodes; one plain process on CPU."""
    gpus, nodes = spec.get("gpus", 0), spec.get("nodes", 1)
    if gpus == 0:
        return "DS_ACCELERATOR=cpu python -m clip_flant5"
    if nodes == 1:
        return f"torchrun --standalone --nproc_per_node={gpus} --module clip_flant5"
    # The rendezvous host is the job's first node, resolved by the batch script (running there) before srun
    # starts the per-node tasks, so all of them get the same endpoint.
    first_host = '$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'
    return (
        f"{node_step(spec)} torchrun --nnodes={nodes} --nproc_per_node={gpus} --rdzv_id=$SLURM_JOB_ID "
        f"--rdzv_backend=c10d --rdzv_endpoint={first_host}:${{CLIP_FLANT5_RDZV_PORT:-{RENDEZVOUS_PORT}}} "
        "--module clip_flant5"
    )


def launcher(stage):
    return lambda wildcards: torchrun_command(stage_resources(wildcards.model, stage))


# The GPU check runs with a training job's resources but a short time limit.
SMOKE_RUNTIME_MINUTES = 10


def smoke_spec(model, stage):
    return stage_resources(model, stage) | {"runtime": SMOKE_RUNTIME_MINUTES}


def smoke_resources():
    blocks = {
        f"models.{model}.{stage}.resources": smoke_spec(model, stage)
        for model in MODELS
        for stage in ("stage1", "stage2")
    }
    return job_resources(
        lambda wildcards: smoke_spec(wildcards.model, wildcards.stage), blocks
    )


def device_check(wildcards):
    """check-devices on every node of the job (one task each), then once more for the report."""
    spec = stage_resources(wildcards.model, wildcards.stage)
    check = f"clip-flant5 check-devices --expect-gpus {spec.get('gpus', 0)}"
    if spec.get("nodes", 1) == 1:
        return check
    return f"{node_step(spec)} {check} && {check}"


# -- targets --------------------------------------------------------------------------------


def data_targets():
    return ["results/data/stage1.json", "results/data/stage2.json"]


def trained_here(stage):
    """Models that train `stage` in this run (stage 1 is skipped where stage 2 starts from a given projector)."""
    return [m for m in MODELS if stage == "stage2" or stage1_projector(m) is None]


def model_targets(stage):
    return [f"results/models/{name}/{stage}" for name in trained_here(stage)]


def smoke_targets():
    return [
        f"results/gpu_smoke/{name}/{stage}.json"
        for stage in ("stage1", "stage2")
        for name in trained_here(stage)
    ]


# -- scoring --------------------------------------------------------------------------------

SCORING = config["scoring"]
SCORED = SCORING["models"]
BENCHMARKS = SCORING["benchmarks"]
# Each benchmark's folder under <data root>/benchmarks/ (= its source in config/sources.yaml).
BENCHMARK_FOLDERS = {
    "winoground": "winoground",
    "eqben": "eqben",
    "drawbench": "seetrue",
    "editbench": "seetrue",
    "coco_t2i": "seetrue",
    "tifa160": "tifa160",
    "pickapic": "pickapic",
    "genai_bench_527": "genai_bench_527",
    "genai_bench_1600": "genai_bench_1600",
}


wildcard_constraints:
    scored="|".join(re.escape(name) for name in SCORED),
    benchmark="|".join(BENCHMARK_FOLDERS),


def benchmark_root(wildcards):
    return f"{DATA_ROOT}/benchmarks/{BENCHMARK_FOLDERS[wildcards.benchmark]}"


def benchmark_ready(wildcards):
    return data_ready(BENCHMARK_FOLDERS[wildcards.benchmark])


def scored_checkpoint_inputs(wildcards):
    """The checkpoint and tokenizer: built here, or fetched from the hub by fetch_model."""
    spec = SCORED[wildcards.scored]
    return model_inputs(model=spec["checkpoint"], tokenizer=spec.get("tokenizer"))


def score_args(wildcards):
    spec = SCORED[wildcards.scored]
    args = [
        f"--model {model_path(spec['checkpoint'])}",
        f"--batch-size {SCORING['batch_size']}",
    ]
    if "tokenizer" in spec:
        args.append(f"--tokenizer {model_path(spec['tokenizer'])}")
    return " ".join(args)


def score_shards(wildcards):
    n = SCORING["shards"]
    return [
        f"results/scores/{wildcards.scored}/{wildcards.benchmark}/shard-{i}-of-{n}.jsonl"
        for i in range(n)
    ]


def metrics_targets():
    return [f"results/metrics/{m}/{b}.json" for m in SCORED for b in BENCHMARKS]


def plot_targets():
    correlation = [
        b for b in BENCHMARKS if b in ("tifa160", "genai_bench_527", "genai_bench_1600")
    ]
    return [f"results/plots/{m}/{b}.png" for m in SCORED for b in correlation]


def compare_args():
    pairs = [f"{m}={s['compare']}" for m, s in SCORED.items() if "compare" in s]
    return "--compare " + " ".join(pairs) if pairs else ""


TABLES = expand(
    "results/tables/{name}.{ext}",
    name=["main", "genai_bench"],
    ext=["csv", "md", "tex"],
)


# -- report --------------------------------------------------------------------------------

RUN_RECORD = {
    "config": "results/report/config.yaml",
    "lock": "results/report/sources.lock.json",
    "models_lock": "results/report/models.lock.json",
}


def all_targets():
    return TABLES + plot_targets() + list(RUN_RECORD.values())
