# Declared outputs are the final artefacts only: resumable trainer checkpoints live in
# results/work/<model>/<stage>, which Snakemake never deletes, so a rerun resumes.


rule training_settings:
    output:
        settings="results/settings/{model}/{stage}.json",
    log:
        "logs/settings/{model}/{stage}.log",
    localrule: True
    conda:
        "../../envs/train.yaml"
    params:
        kind="train",
        values=train_settings,
    script:
        "../scripts/write_settings.py"


rule train_stage1:
    input:
        model="results/models/{model}/untrained",
        data="results/data/stage1.json",
        settings="results/settings/{model}/stage1.json",
    output:
        model=report(
            directory("results/models/{model}/stage1"),
            patterns=["{plot}.png"],
            caption="../report/loss.rst",
            category="Training",
            subcategory="{model}",
            labels={"model": "{model}", "stage": "stage1"},
        ),
    log:
        "logs/models/{model}/stage1.log",
    benchmark:
        "logs/models/{model}/stage1.benchmark.tsv"
    conda:
        "../../envs/train.yaml"
    threads: training_threads("stage1")
    resources:
        **training_resources("stage1"),
    params:
        launch=launcher("stage1"),
        image_root=image_root("stage1"),
        work="results/work/{model}/stage1",
    shell:
        "HF_HUB_OFFLINE=1 {params.launch} train --stage 1 --model {input.model} --data {input.data} "
        "--image-root {params.image_root} --output {output.model} --work-dir {params.work} "
        "--threads {threads} --settings {input.settings} > {log} 2>&1"


rule train_stage2:
    input:
        unpack(stage2_inputs),
    output:
        model=report(
            directory("results/models/{model}/stage2"),
            patterns=["{plot}.png"],
            caption="../report/loss.rst",
            category="Training",
            subcategory="{model}",
            labels={"model": "{model}", "stage": "stage2"},
        ),
    log:
        "logs/models/{model}/stage2.log",
    benchmark:
        "logs/models/{model}/stage2.benchmark.tsv"
    conda:
        "../../envs/train.yaml"
    threads: training_threads("stage2")
    resources:
        **training_resources("stage2"),
    params:
        launch=launcher("stage2"),
        projector=stage2_projector,
        image_root=image_root("stage2"),
        work="results/work/{model}/stage2",
    shell:
        "HF_HUB_OFFLINE=1 {params.launch} train --stage 2 --model {input.model} --projector {params.projector} "
        "--data {input.data} --image-root {params.image_root} --output {output.model} "
        "--work-dir {params.work} --threads {threads} --settings {input.settings} > {log} 2>&1"


rule gpu_smoke_job:
    output:
        report="results/gpu_smoke/{model}/{stage}.json",
    log:
        "logs/gpu_smoke/{model}/{stage}.log",
    conda:
        "../../envs/train.yaml"
    resources:
        **smoke_resources(),
    params:
        check=device_check,
    shell:
        "({params.check} --out {output.report}) > {log} 2>&1"


rule gpu_smoke:
    input:
        smoke_targets(),


rule stage1:
    input:
        model_targets("stage1"),


rule stage2:
    input:
        model_targets("stage2"),


for name in trained_here("stage1"):

    rule:
        name:
            f"stage1_{name}"
        input:
            f"results/models/{name}/stage1",


for name in MODELS:

    rule:
        name:
            f"stage2_{name}"
        input:
            f"results/models/{name}/stage2",
