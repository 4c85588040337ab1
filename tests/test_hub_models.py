"""Hub models fetched once into local folders (clip_flant5.download.snapshot), against a hub on loopback.

`clip-flant5 fetch-model` runs in a subprocess: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when it is
imported, and this test session keeps the hub offline (conftest)."""

import json
import os
import subprocess
import sys

import pytest
from fakehub import FakeHub

from clip_flant5.download.snapshot import ModelFetchError, hub_origin, select_files

CHECKPOINT = {
    "config.json": b'{"model_type": "t5"}',
    "generation_config.json": b"{}",
    "model.safetensors": b"S" * 300,
    "pytorch_model.bin": b"B" * 300,
    "tf_model.h5": b"T" * 300,
    "spiece.model": b"sp",
    "training_args.bin": b"args",
    "README.md": b"# readme",
}


@pytest.fixture
def hub():
    with FakeHub() as server:
        yield server


def fetch(hub, tmp_path, repo, *args, offline=False):
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "1" if offline else "0", "HF_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "clip_flant5", "fetch-model", repo, "--root", str(tmp_path / "hub"),
           "--lock", str(tmp_path / "models.lock.json"), "--record", str(tmp_path / "record.json"), *args]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    record = json.loads((tmp_path / "record.json").read_text()) if run.returncode == 0 else None
    return run, record


def test_fetches_the_files_a_role_needs_in_one_weights_format_and_locks_the_commit(hub, tmp_path):
    commit = hub.push("acme/clip-flant5", CHECKPOINT)
    run, record = fetch(hub, tmp_path, "acme/clip-flant5")
    assert run.returncode == 0, run.stderr
    folder = tmp_path / "hub/acme/clip-flant5"
    assert record["commit"] == commit and record["path"] == str(folder)
    assert record["files"] == ["config.json", "generation_config.json", "model.safetensors", "spiece.model"]
    assert (folder / "model.safetensors").read_bytes() == CHECKPOINT["model.safetensors"]
    assert not (folder / "pytorch_model.bin").exists() and not (folder / "tf_model.h5").exists()
    assert hub_origin(folder) == "acme/clip-flant5" and hub_origin(tmp_path) is None
    lock = json.loads((tmp_path / "models.lock.json").read_text())
    assert lock["models"] == {"acme/clip-flant5": {"revision": "main", "commit": commit}}


def test_a_moved_branch_is_reported_and_the_locked_commit_fetched_until_the_lock_is_refreshed(hub, tmp_path):
    old = hub.push("acme/clip-flant5", CHECKPOINT)
    assert fetch(hub, tmp_path, "acme/clip-flant5")[0].returncode == 0
    new = hub.push("acme/clip-flant5", {**CHECKPOINT, "model.safetensors": b"N" * 300})
    run, record = fetch(hub, tmp_path, "acme/clip-flant5")
    assert run.returncode == 0, run.stderr
    assert record["commit"] == old and record["upstream_commit"] == new
    assert f"is now at {new} upstream" in run.stderr and "--refresh-lock" in run.stderr
    folder = tmp_path / "hub/acme/clip-flant5"
    assert (folder / "model.safetensors").read_bytes() == b"S" * 300  # not the new upstream bytes
    run, record = fetch(hub, tmp_path, "acme/clip-flant5", "--refresh-lock")
    assert run.returncode == 0, run.stderr
    assert record["commit"] == new and (folder / "model.safetensors").read_bytes() == b"N" * 300
    assert json.loads((tmp_path / "models.lock.json").read_text())["models"]["acme/clip-flant5"]["commit"] == new


def test_roles_union_and_a_revision_from_the_config(hub, tmp_path):
    first = hub.push("acme/t5", {"config.json": b"{}", "spiece.model": b"sp", "pytorch_model.bin": b"w" * 10})
    hub.push("acme/t5", {"config.json": b"{}", "spiece.model": b"sp2"})
    run, record = fetch(hub, tmp_path, "acme/t5", "--revision", first, "--role", "tokenizer", "--role", "base")
    assert run.returncode == 0, run.stderr
    assert record["commit"] == first and record["files"] == ["config.json", "pytorch_model.bin", "spiece.model"]


@pytest.mark.parametrize(
    ("repo", "files", "args", "message"),
    [
        ("acme/none", None, [], "no model repository acme/none"),
        ("acme/proj", {"config.json": b"{}"}, ["--role", "projector"], "has no mm_projector.bin"),
        ("acme/proj", {"config.json": b"{}"}, ["--revision", "v9"], "has no revision 'v9'"),
    ],
)
def test_unusable_repositories_are_clear_errors(hub, tmp_path, repo, files, args, message):
    if files:
        hub.push(repo, files)
    run, _ = fetch(hub, tmp_path, repo, *args)
    assert run.returncode == 2 and message in run.stderr, run.stderr
    assert not (tmp_path / "models.lock.json").exists()


def test_without_network_the_fetch_says_where_to_run_it(hub, tmp_path):
    hub.push("acme/clip-flant5", CHECKPOINT)
    run, _ = fetch(hub, tmp_path, "acme/clip-flant5", offline=True)
    assert run.returncode == 2 and "cannot reach the hub" in run.stderr, run.stderr
    assert hub.model_requests() == []


def test_select_files_takes_shards_with_their_index():
    files = ["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
             "pytorch_model.bin.index.json", "flax_model.msgpack"]  # fmt: skip
    assert select_files("r", files, ["base"]) == sorted(files[:4])
    with pytest.raises(ModelFetchError, match="holds no model weights"):
        select_files("r", ["config.json"], ["checkpoint"])
    with pytest.raises(ValueError, match="unknown model role"):
        select_files("r", files, ["everything"])


@pytest.mark.parametrize("prefix", ["", "model."])
def test_a_published_stage1_projector_is_fetched_alone_and_loads(hub, tmp_path, tiny_model, prefix):
    """The stage-1 repositories hold mm_projector.bin as the original trainer wrote it: bf16, keys named after the
    module path (with or without a `model.` prefix, as LLaVA-style trainers differ); stage 2 strips up to it."""
    import io

    import torch

    from clip_flant5.checkpoint import load_projector

    weights = {f"{prefix}mm_projector.{k}": torch.randn_like(v).to(torch.bfloat16)
               for k, v in tiny_model.mm_projector.state_dict().items()}  # fmt: skip
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    hub.push("acme/stage-1", {"mm_projector.bin": buffer.getvalue(), "config.json": b"{}", "trainer_state.json": b"{}"})
    run, record = fetch(hub, tmp_path, "acme/stage-1", "--role", "projector")
    assert run.returncode == 0, run.stderr
    assert record["files"] == ["config.json", "mm_projector.bin"]
    load_projector(tiny_model, record["path"])
    for key, value in tiny_model.mm_projector.state_dict().items():
        assert torch.equal(value, weights[f"{prefix}mm_projector.{key}"].float())
