# What the report records about the run besides its results: the configuration as validated (defaults
# filled in), the data lock (sha256 and size of every downloaded file) and the hub models' commit lock.


rule run_record:
    input:
        lock=SOURCES_LOCK,
        models_lock=MODELS_LOCK,
    output:
        config=report(
            RUN_RECORD["config"], caption="../report/config.rst", category="Run"
        ),
        lock=report(RUN_RECORD["lock"], caption="../report/lock.rst", category="Run"),
        models_lock=report(
            RUN_RECORD["models_lock"],
            caption="../report/models_lock.rst",
            category="Run",
        ),
    log:
        "logs/report/run_record.log",
    conda:
        "../../envs/tables.yaml"
    params:
        config=config,
    script:
        "../scripts/run_record.py"
