import re
from pathlib import Path

from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")

MODELS = config["models"]
# Values that name files in this workflow (inputs); anything else is a Hugging Face hub id.
LOCAL_PREFIXES = ("results/", "resources/", "./", "../")


wildcard_constraints:
    model="|".join(re.escape(name) for name in MODELS),


def is_local(path):
    return path.startswith(LOCAL_PREFIXES) or Path(path).is_absolute()


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


def all_targets():
    return [f"results/models/{name}/untrained" for name in MODELS]
