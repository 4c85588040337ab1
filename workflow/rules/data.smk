rule make_demo_data:
    output:
        manifest=f"{DATA_ROOT}/manifest.json",
    log:
        "logs/data/make_demo_data.log",
    benchmark:
        "logs/data/make_demo_data.benchmark.tsv"
    conda:
        "../../envs/data.yaml"
    params:
        root=lambda wildcards, output: os.path.dirname(output.manifest),
        seed=DATA["demo"]["seed"],
        scale=DATA["demo"]["scale"],
    shell:
        "clip-flant5 make-demo-data --out {params.root} --seed {params.seed} --scale {params.scale} > {log} 2>&1"


rule fetch_source:
    output:
        record="results/data/sources/{source}.json",
    log:
        "logs/data/sources/{source}.log",
    benchmark:
        "logs/data/sources/{source}.benchmark.tsv"
    retries: 2
    localrule: DATA["fetch_on"] == "submit_host"
    conda:
        "../../envs/data.yaml"
    params:
        root=DATA_ROOT,
        manifest=SOURCES_MANIFEST,
        lock=SOURCES_LOCK,
    shell:
        "clip-flant5 fetch {wildcards.source} --dest {params.root} --sources {params.manifest} --lock {params.lock} "
        "--record {output.record} > {log} 2>&1"


rule fetch_ocrvqa_images:
    input:
        ready=data_ready("ocr_vqa"),
    output:
        report="results/data/ocr_vqa_images.json",
    log:
        "logs/data/ocr_vqa_images.log",
    benchmark:
        "logs/data/ocr_vqa_images.benchmark.tsv"
    retries: 2
    localrule: DATA["fetch_on"] == "submit_host"
    conda:
        "../../envs/data.yaml"
    params:
        dataset=f"{TRAIN_ROOT}/ocr_vqa/dataset.json",
        images=f"{TRAIN_ROOT}/ocr_vqa/images",
        state=f"{TRAIN_ROOT}/ocr_vqa/images.report.json",
        connections=DATA["download_connections"],
        allow=flag("allow-failures", DATA["skip_bad_images"]),
    shell:
        "clip-flant5 fetch-ocrvqa-images {params.dataset} {params.images} --connections {params.connections} "
        "--report {params.state} --record {output.report} {params.allow} > {log} 2>&1"


rule fix_ocrvqa:
    input:
        ready=ocrvqa_images_ready(),
    output:
        report="results/data/ocr_vqa_fix.json",
    log:
        "logs/data/ocr_vqa_fix.log",
    benchmark:
        "logs/data/ocr_vqa_fix.benchmark.tsv"
    conda:
        "../../envs/data.yaml"
    threads: DATA["jobs"]
    params:
        folder=f"{TRAIN_ROOT}/ocr_vqa/images",
        keep_going=flag("keep-going", DATA["skip_bad_images"]),
    shell:
        "clip-flant5 fix-ocrvqa {params.folder} --jobs {threads} {params.keep_going} "
        "--report {output.report} > {log} 2>&1"


rule flatten:
    input:
        ready=data_ready("llava_mix665k"),
    output:
        data="results/data/llava_v1_5_mix665k_flattened.json",
        report="results/data/llava_v1_5_mix665k_flattened.report.json",
    log:
        "logs/data/flatten.log",
    benchmark:
        "logs/data/flatten.benchmark.tsv"
    conda:
        "../../envs/data.yaml"
    params:
        src=f"{TRAIN_ROOT}/llava_v1_5_mix665k.json",
        mode=DATA["flatten_mode"],
        skip=flag("skip-malformed", DATA["skip_malformed_records"]),
    shell:
        "clip-flant5 flatten {params.src} {output.data} --mode {params.mode} {params.skip} "
        "--report {output.report} > {log} 2>&1"


rule validate_data:
    input:
        unpack(validation_inputs),
    output:
        data="results/data/{stage}.json",
        report="results/data/{stage}.validation.json",
    log:
        "logs/data/{stage}.validation.log",
    benchmark:
        "logs/data/{stage}.validation.benchmark.tsv"
    conda:
        "../../envs/data.yaml"
    threads: DATA["jobs"]
    params:
        paths=validation_paths,
        check=DATA["check_images"],
        drop=flag("drop-bad", DATA["skip_bad_images"]),
    shell:
        "clip-flant5 validate-data {params.paths[0]} --image-root {params.paths[1]} --jobs {threads} "
        "--check {params.check} {params.drop} --clean {output.data} --report {output.report} > {log} 2>&1"


rule data:
    input:
        data_targets(),
