# A job's settings as a file (read by `clip-flant5 train|score --settings`), resolved and checked by the package:
# training settings over the stage's published values, scoring settings over the published scorer's.
from clip_flant5.recipe import TrainSettings
from clip_flant5.settings import write_settings
from clip_flant5.vqascore import ScoreSettings

params = snakemake.params  # noqa: F821
if params.kind == "train":
    settings = TrainSettings.from_dict(params.stage, params.values)
else:
    settings = ScoreSettings(**params.values)
write_settings(settings, snakemake.output.settings)  # noqa: F821
with open(snakemake.log[0], "w") as log:  # noqa: F821
    print(settings, file=log)
