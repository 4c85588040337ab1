import copy
import json
import os
import re
from pathlib import Path

import yaml
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
DATA_ROOT = DATA["root"]
TRAIN_ROOT = f"{DATA_ROOT}/train"
SOURCES = yaml.safe_load(Path(workflow.basedir, "../config/sources.yaml").read_text())[
    "sources"
]
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


# -- data ---------------------------------------------------------------------------------


def data_ready(*sources):
    """What makes `sources` present: the demo corpus, or one fetch record per source."""
    if DATA["source"] == "demo":
        return [f"{DATA_ROOT}/manifest.json"]
    return [f"results/data/sources/{name}.json" for name in sources]


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
    """The local base checkpoints (vision/language) a model is built from, as rule inputs."""
    spec = MODELS[wildcards.model]
    return {
        key: spec[key]
        for key in ("vision", "language")
        if key in spec and is_local(spec[key])
    }


def init_model_args(wildcards):
    """clip-flant5 init-model arguments of a configured model (the variant fills the rest)."""
    spec = MODELS[wildcards.model]
    args = [f"--variant {spec['variant']}", f"--seed {spec['seed']}"]
    args += [
        f"--{key} {spec[key]}"
        for key in ("vision", "language", "projector")
        if key in spec
    ]
    return " ".join(args)


def stage_config(model, stage):
    return MODELS[model].get(stage, {})


def train_settings(stage):
    """The stage's TrainSettings as JSON (unset keys take the published recipe)."""

    def settings(wildcards):
        values = stage_config(wildcards.model, stage).get("settings", {})
        return json.dumps(values, sort_keys=True)

    return settings


def stage_resources(model, stage):
    return stage_config(model, stage).get("resources", {})


def launcher(stage):
    """torchrun with one process per GPU; a plain process on CPU (the demo)."""

    def command(wildcards):
        gpus = stage_resources(wildcards.model, stage).get("gpus", 0)
        if gpus == 0:
            return "DS_ACCELERATOR=cpu python -m clip_flant5"
        return f"torchrun --standalone --nproc_per_node={gpus} --module clip_flant5"

    return command


# -- targets --------------------------------------------------------------------------------


def data_targets():
    return ["results/data/stage1.json", "results/data/stage2.json"]


def model_targets(stage):
    return [f"results/models/{name}/{stage}" for name in MODELS]


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
    """The checkpoint as an input when it is built here (a hub id is fetched by the job)."""
    path = SCORED[wildcards.scored]["checkpoint"]
    return {"model": path} if is_local(path) else {}


def score_args(wildcards):
    spec = SCORED[wildcards.scored]
    args = [f"--model {spec['checkpoint']}", f"--batch-size {SCORING['batch_size']}"]
    if "tokenizer" in spec:
        args.append(f"--tokenizer {spec['tokenizer']}")
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


def all_targets():
    return TABLES + plot_targets()
