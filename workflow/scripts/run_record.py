# The configuration this run used (validated, defaults filled in) and the data and model locks, for the report.
import shutil

import yaml
from clip_flant5.atomic import write_text

write_text(snakemake.output.config, yaml.safe_dump(snakemake.params.config, sort_keys=False))  # noqa: F821
shutil.copyfile(snakemake.input.lock, snakemake.output.lock)  # noqa: F821
shutil.copyfile(snakemake.input.models_lock, snakemake.output.models_lock)  # noqa: F821
