# A job's settings as a file (read by `clip-flant5 train|score --settings`), resolved and checked by the package.
from clip_flant5.workflow_config import write_job_settings

settings = write_job_settings(
    snakemake.params.kind,  # noqa: F821
    snakemake.params.values,  # noqa: F821
    snakemake.output.settings,  # noqa: F821
    stage=snakemake.wildcards.get("stage"),  # noqa: F821
)
with open(snakemake.log[0], "w") as log:  # noqa: F821
    print(settings, file=log)
