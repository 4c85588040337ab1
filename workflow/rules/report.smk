# What the report records about the run besides its results: the configuration as validated (defaults
# filled in) and the data lock (sha256 and size of every downloaded file).


rule run_record:
    input:
        lock="config/sources.lock.json",
    output:
        config=report(
            RUN_RECORD["config"], caption="../report/config.rst", category="Run"
        ),
        lock=report(RUN_RECORD["lock"], caption="../report/lock.rst", category="Run"),
    log:
        "logs/report/run_record.log",
    conda:
        "../../envs/tables.yaml"
    params:
        config=config,
    script:
        "../scripts/run_record.py"
