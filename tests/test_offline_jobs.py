"""A run whose jobs never need the network: hub models are fetched once by the local rule fetch_model (from a
hub on loopback here), then every job runs while that hub refuses all connections, as compute nodes without
internet would. A commit pushed upstream afterwards changes nothing until the lock is refreshed."""

import json

import pytest
import torch
import yaml
from fakehub import FakeHub
from test_workflow import snakemake

from clip_flant5.checkpoint import init_model, save_model

pytestmark = pytest.mark.slow

CHECKPOINT_REPO, TOKENIZER_REPO = "acme/clip-flant5-tiny", "acme/flan-t5-tiny"


def folder_files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def hub(tiny_base, tmp_path):
    model = init_model(str(tiny_base / "vision"), str(tiny_base / "language"), seed=0)
    checkpoint = save_model(model, tmp_path / "published", tokenizer_dir=tiny_base / "language", dtype=torch.float32)
    with FakeHub() as server:
        server.push(CHECKPOINT_REPO, folder_files(checkpoint))
        server.push(TOKENIZER_REPO, folder_files(tiny_base / "language"))
        yield server


def test_jobs_run_without_network_after_the_local_fetch(workdir, hub, tmp_path, monkeypatch):
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    config["data"]["demo"]["scale"] = 0.1
    config["models"] = {}
    config["scoring"]["models"] = {"hub-tiny": {"checkpoint": CHECKPOINT_REPO, "tokenizer": TOKENIZER_REPO}}
    config["scoring"]["benchmarks"] = ["winoground", "pickapic"]
    (workdir / "config/offline.yaml").write_text(yaml.safe_dump(config))
    # The submit host's environment: network, the hub at its address. The rules themselves set HF_HUB_OFFLINE=1
    # for the jobs.
    for key, value in {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf-home")}.items():
        monkeypatch.setenv(key, value)
    fetch = snakemake(workdir, "hub_models", "--cores", "2", "--configfile", "config/offline.yaml")
    assert fetch.returncode == 0, fetch.stderr[-3000:]
    snapshot = workdir / "resources/hub" / CHECKPOINT_REPO
    assert (snapshot / "model.safetensors").is_file() and (snapshot / "config.json").is_file()
    locked = json.loads((workdir / "config/models.lock.json").read_text())["models"]
    assert set(locked) == {CHECKPOINT_REPO, TOKENIZER_REPO}
    assert locked[CHECKPOINT_REPO]["commit"] == hub.repos[CHECKPOINT_REPO]["refs"]["main"]

    hub.offline()  # from here on no connection gets an answer
    before = len(hub.requests)
    run = snakemake(workdir, "--cores", "2", "--configfile", "config/offline.yaml", timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert hub.requests[before:] == []  # no job even tried
    metrics = json.loads((workdir / "results/metrics/hub-tiny/winoground.json").read_text())
    assert metrics["model"] == "hub-tiny"
    log = (workdir / "logs/scores/hub-tiny/winoground/shard-0-of-1.log").read_text()
    assert "Traceback" not in log

    hub.offline(False)
    hub.push(CHECKPOINT_REPO, {**folder_files(snapshot), "model.safetensors": b"changed upstream"})
    again = snakemake(workdir, "-n", "--configfile", "config/offline.yaml")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # refetching (a fresh clone with this lock) takes the locked commit and says that upstream moved
    refetch = snakemake(workdir, "hub_models", "--forcerun", "fetch_model", "--until", "fetch_model",
                        "--cores", "1", "--configfile", "config/offline.yaml")  # fmt: skip
    assert refetch.returncode == 0, refetch.stderr[-3000:]
    record = json.loads((workdir / f"results/hub/{CHECKPOINT_REPO}.json").read_text())
    assert record["commit"] == locked[CHECKPOINT_REPO]["commit"] != record["upstream_commit"]
    assert (snapshot / "model.safetensors").read_bytes() != b"changed upstream"
    assert "--refresh-lock" in (workdir / f"logs/hub/{CHECKPOINT_REPO}.log").read_text()
