import copy
import os
import re
from pathlib import Path

from clip_flant5 import cluster
from clip_flant5.benchmarks import REGISTRY as BENCHMARK_REGISTRY
from clip_flant5.errors import UserError
from clip_flant5.recipe import STAGES
from clip_flant5.sources import DEFAULT_SOURCES, load_sources
from clip_flant5.variants import get_variant, resolve_model
from clip_flant5.vqascore import ScoreSettings
from clip_flant5.workflow_config import validate_config
from snakemake.exceptions import WorkflowError

# A --configfile replaces the demo configuration instead of being merged into it (Snakemake merges nested
# dicts, which would add the demo's models to the paper's); --config values still apply on top.
if workflow.overwrite_configfiles:
    overrides = copy.deepcopy(workflow.config_settings.overwrite_config)
    config.clear()
    config.update(overrides)

try:  # the schema's structure, completed from the package's registries and settings
    validate_config(config, Path(workflow.basedir) / "schemas/config.schema.yaml")
except UserError as err:
    raise WorkflowError(str(err)) from None

MODELS = config["models"]
DATA = config["data"]
HUB = config["hub"]
SCORING = config["scoring"]
SCORED = SCORING["models"]
BENCHMARKS = SCORING["benchmarks"]
for _name, _spec in MODELS.items():
    if "projector" in _spec.get("stage2", {}):
        raise WorkflowError(
            f"config: models.{_name}.stage2.projector: a stage-1 projector to start from goes under stage1"
        )
DATA_ROOT = DATA["root"]
TRAIN_ROOT = f"{DATA_ROOT}/train"
# The data manifest is the package's; the locks are the checkout's the workflow runs from.
CONFIG_DIR = Path(workflow.basedir).parent / "config"
SOURCES_MANIFEST = str(DEFAULT_SOURCES)
SOURCES_LOCK = str(CONFIG_DIR / "sources.lock.json")
MODELS_LOCK = str(CONFIG_DIR / "models.lock.json")
SOURCES = load_sources(SOURCES_MANIFEST)
# Values that name files in this workflow (inputs); anything else is a Hugging Face hub id.
LOCAL_PREFIXES = ("results/", "resources/", "./", "../")
# Sources each prepared dataset needs when data comes from the manifest (clip_flant5/sources.yaml).
STAGE1_SOURCES = ["llava_pretrain"]
STAGE2_IMAGE_SOURCES = ["coco_train2017", "gqa", "ocr_vqa", "textvqa", "vg"]


wildcard_constraints:
    model="|".join(re.escape(name) for name in MODELS),
    source="|".join(re.escape(name) for name in SOURCES),
    stage="|".join(stage.name for stage in STAGES.values()),


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


def scored_source(name):
    """Checkpoint, tokenizer and published row of a scored model (a released model's name resolves to all three)."""
    spec = SCORED[name]
    return resolve_model(spec["checkpoint"], spec.get("tokenizer"))


def hub_roles():
    """Hub id -> what the run uses it as (clip_flant5.download.snapshot.ROLES: decides the files fetched)."""
    roles = {}
    scored = [scored_source(m) for m in SCORED]
    uses = [(s.checkpoint, "checkpoint") for s in scored]
    uses += [(s.tokenizer, "tokenizer") for s in scored if s.tokenizer != s.checkpoint]
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


def init_memory_mb(wildcards):
    return get_variant(MODELS[wildcards.model]["variant"]).init_memory_mb


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
        "settings": f"results/settings/{wildcards.model}/stage2.json",
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


def train_settings(wildcards):
    """A stage's settings as configured, over the variant's own (e.g. stage 1 without split text); the settings
    rule resolves them over the published recipe into the file the training job reads.
    """
    variant = get_variant(MODELS[wildcards.model]["variant"])
    values = variant.training_settings(int(wildcards.stage[-1]))
    values.update(stage_config(wildcards.model, wildcards.stage).get("settings", {}))
    return values


def stage_resources(model, stage):
    return stage_config(model, stage).get("resources", {})


# -- cluster resources (clip_flant5.cluster) ------------------------------------------------


def job_resources(spec_of, blocks):
    """`resources:` of a rule whose config block is `spec_of(wildcards)`, one of `blocks` (name -> block)."""
    try:
        keys = cluster.declared_keys(blocks)
    except UserError as err:
        raise WorkflowError(str(err)) from None

    def value(key):
        return lambda wildcards: cluster.slurm_resources(spec_of(wildcards)).get(key)

    return {key: value(key) for key in keys}


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


def given_cores():
    """--cores; 1 in the modes that run no job and take no --cores (--report, --summary)."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


def training_threads(stage):
    return lambda wildcards: cluster.job_threads(
        stage_resources(wildcards.model, stage), given_cores()
    )


def scoring_threads():
    return lambda wildcards: cluster.job_threads(SCORING["resources"], given_cores())


def launcher(stage):
    return lambda wildcards: cluster.launch_command(
        stage_resources(wildcards.model, stage)
    )


def smoke_resources():
    blocks = {
        f"models.{model}.{stage}.resources": cluster.smoke_spec(
            stage_resources(model, stage)
        )
        for model in MODELS
        for stage in ("stage1", "stage2")
    }
    return job_resources(
        lambda wildcards: cluster.smoke_spec(
            stage_resources(wildcards.model, wildcards.stage)
        ),
        blocks,
    )


def device_check(wildcards):
    return cluster.device_check_command(
        stage_resources(wildcards.model, wildcards.stage)
    )


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

# Each benchmark's folder under <data root>/benchmarks/ (= its source in the data manifest), from its adapter.
BENCHMARK_FOLDERS = {name: bench.folder for name, bench in BENCHMARK_REGISTRY.items()}
RATED = [name for name, bench in BENCHMARK_REGISTRY.items() if bench.human_ratings]


wildcard_constraints:
    scored="|".join(re.escape(name) for name in SCORED),
    benchmark="|".join(BENCHMARK_FOLDERS),


def benchmark_root(wildcards):
    return f"{DATA_ROOT}/benchmarks/{BENCHMARK_FOLDERS[wildcards.benchmark]}"


def benchmark_ready(wildcards):
    return data_ready(BENCHMARK_FOLDERS[wildcards.benchmark])


def scored_checkpoint_inputs(wildcards):
    """The checkpoint and tokenizer: built here, or fetched from the hub by fetch_model."""
    source = scored_source(wildcards.scored)
    return model_inputs(model=source.checkpoint, tokenizer=source.tokenizer)


def score_args(wildcards):
    source = scored_source(wildcards.scored)
    args = [f"--model {model_path(source.checkpoint)}"]
    if source.tokenizer != source.checkpoint:
        args.append(f"--tokenizer {model_path(source.tokenizer)}")
    return " ".join(args)


def score_settings():
    """The scoring settings of the config (ScoreSettings' fields), for the file the scoring jobs read."""
    fields = ScoreSettings.__dataclass_fields__
    return {key: value for key, value in SCORING.items() if key in fields}


def score_shards(wildcards):
    n = SCORING["shards"]
    return [
        f"results/scores/{wildcards.scored}/{wildcards.benchmark}/shard-{i}-of-{n}.jsonl"
        for i in range(n)
    ]


def metrics_targets():
    return [f"results/metrics/{m}/{b}.json" for m in SCORED for b in BENCHMARKS]


def plot_targets():
    return [
        f"results/plots/{m}/{b}.png" for m in SCORED for b in BENCHMARKS if b in RATED
    ]


def compare_args():
    rows = {m: SCORED[m].get("compare", scored_source(m).published_row) for m in SCORED}
    pairs = [f"{m}={row}" for m, row in rows.items() if row]
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
