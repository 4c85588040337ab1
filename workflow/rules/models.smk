rule tiny_base:
    output:
        vision=directory("results/models/tiny-base/vision"),
        language=directory("results/models/tiny-base/language"),
    log:
        "logs/models/tiny-base.log",
    conda:
        "../../envs/train.yaml"
    params:
        seed=config["tiny_base"]["seed"],
    shell:
        'clip-flant5 tiny-base --out "$(dirname {output.vision})" --seed {params.seed} > {log} 2>&1'


rule init_model:
    input:
        unpack(base_model_inputs),
    output:
        model=directory("results/models/{model}/untrained"),
    log:
        "logs/models/{model}/untrained.log",
    conda:
        "../../envs/train.yaml"
    resources:
        mem_mb=init_memory_mb,
    params:
        args=init_model_args,
    shell:
        "HF_HUB_OFFLINE=1 clip-flant5 init-model {params.args} --out {output.model} > {log} 2>&1"


rule fetch_model:
    output:
        record="results/hub/{repo}.json",
    log:
        "logs/hub/{repo}.log",
    retries: 2
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        root=HUB["root"],
        args=fetch_model_args,
        lock=MODELS_LOCK,
    shell:
        "clip-flant5 fetch-model {wildcards.repo} --root {params.root} {params.args} --lock {params.lock} "
        "--record {output.record} > {log} 2>&1"


rule hub_models:
    input:
        [f"results/hub/{repo}.json" for repo in HUB_MODELS],
