rule benchmark_pairs:
    input:
        ready=benchmark_ready,
    output:
        pairs="results/benchmarks/{benchmark}/pairs.jsonl",
    log:
        "logs/benchmarks/{benchmark}/pairs.log",
    conda:
        "../../envs/score.yaml"
    params:
        root=benchmark_root,
    shell:
        "clip-flant5 benchmark-pairs {wildcards.benchmark} --root {params.root} --out {output.pairs} > {log} 2>&1"


rule scoring_settings:
    output:
        settings="results/settings/scoring.json",
    log:
        "logs/settings/scoring.log",
    localrule: True
    conda:
        "../../envs/score.yaml"
    params:
        kind="score",
        values=score_settings(),
    script:
        "../scripts/write_settings.py"


rule score:
    input:
        unpack(scored_checkpoint_inputs),
        pairs="results/benchmarks/{benchmark}/pairs.jsonl",
        settings="results/settings/scoring.json",
    output:
        scores="results/scores/{scored}/{benchmark}/shard-{i}-of-{n}.jsonl",
    log:
        "logs/scores/{scored}/{benchmark}/shard-{i}-of-{n}.log",
    benchmark:
        "logs/scores/{scored}/{benchmark}/shard-{i}-of-{n}.benchmark.tsv"
    conda:
        "../../envs/score.yaml"
    threads: scoring_threads()
    resources:
        **scoring_resources(),
    params:
        args=score_args,
        root=benchmark_root,
    shell:
        "HF_HUB_OFFLINE=1 clip-flant5 score {params.args} --settings {input.settings} --pairs {input.pairs} "
        "--image-root {params.root} --shard {wildcards.i}/{wildcards.n} --threads {threads} --out {output.scores} "
        "> {log} 2>&1"


rule merge_scores:
    input:
        pairs="results/benchmarks/{benchmark}/pairs.jsonl",
        shards=score_shards,
    output:
        scores="results/scores/{scored}/{benchmark}.jsonl",
    log:
        "logs/scores/{scored}/{benchmark}.merge.log",
    conda:
        "../../envs/score.yaml"
    shell:
        "clip-flant5 merge-scores --pairs {input.pairs} --out {output.scores} {input.shards} > {log} 2>&1"


rule evaluate:
    input:
        scores="results/scores/{scored}/{benchmark}.jsonl",
        ready=benchmark_ready,
    output:
        metrics="results/metrics/{scored}/{benchmark}.json",
    log:
        "logs/metrics/{scored}/{benchmark}.log",
    conda:
        "../../envs/score.yaml"
    params:
        root=benchmark_root,
    shell:
        "clip-flant5 evaluate --benchmark {wildcards.benchmark} --root {params.root} --scores {input.scores} "
        "--model {wildcards.scored} --out {output.metrics} > {log} 2>&1"


rule plot_correlation:
    input:
        scores="results/scores/{scored}/{benchmark}.jsonl",
        ready=benchmark_ready,
    output:
        metrics="results/plots/{scored}/{benchmark}.json",
        plot=report(
            "results/plots/{scored}/{benchmark}.png",
            caption="../report/correlation.rst",
            category="Scores vs human ratings",
        ),
    log:
        "logs/plots/{scored}/{benchmark}.log",
    wildcard_constraints:
        benchmark="|".join(RATED),
    conda:
        "../../envs/tables.yaml"
    params:
        root=benchmark_root,
    shell:
        "clip-flant5 evaluate --benchmark {wildcards.benchmark} --root {params.root} --scores {input.scores} "
        "--model {wildcards.scored} --out {output.metrics} --plot {output.plot} > {log} 2>&1"


rule tables:
    input:
        metrics=metrics_targets(),
    output:
        tables=[
            (
                report(path, caption="../report/tables.rst", category="Tables")
                if path.endswith(".csv")
                else path
            )
            for path in TABLES
        ],
        plot=report(
            "results/tables/main.png",
            caption="../report/tables.rst",
            category="Tables",
        ),
    log:
        "logs/tables.log",
    conda:
        "../../envs/tables.yaml"
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.plot),
        compare=compare_args(),
    shell:
        "clip-flant5 tables {input.metrics} --out-dir {params.out_dir} {params.compare} > {log} 2>&1"


rule scores:
    input:
        metrics_targets(),
        plot_targets(),


for name in SCORED:

    rule:
        name:
            f"scores_{name}"
        input:
            [f"results/metrics/{name}/{b}.json" for b in BENCHMARKS],


for benchmark in BENCHMARKS:

    rule:
        name:
            f"benchmark_{benchmark}"
        input:
            [f"results/metrics/{m}/{benchmark}.json" for m in SCORED],
