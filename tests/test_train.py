"""Training: batch layout, resumption after SIGTERM, multi-process loss equality (CPU, gloo), per-epoch data."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

import clip_flant5.train as train_module
from clip_flant5.callbacks import CheckpointPolicy
from clip_flant5.checkpoint import init_model, load_model, save_model, save_projector
from clip_flant5.data import ConversationDataset
from clip_flant5.errors import UserError
from clip_flant5.recipe import STAGES, TrainSettings
from clip_flant5.sampler import SeededRandomSampler
from clip_flant5.train import EXIT_PREEMPTED, batch_layout

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 30), "blue": (30, 30, 220)}


@pytest.fixture(scope="module")
def setup(tiny_base, tmp_path_factory):
    """An untrained tiny model and a small yes/no + caption corpus of rendered circles."""
    root = tmp_path_factory.mktemp("train")
    untrained = init_model(str(tiny_base / "vision"), str(tiny_base / "language"))
    save_model(untrained, root / "untrained", tokenizer_dir=tiny_base / "language", dtype=torch.float32)
    save_projector(untrained, root / "projector")  # stands in for a stage-1 output
    (root / "img").mkdir()
    qa, captions = [], []
    names = list(COLOURS)
    for i in range(48):
        colour, asked = names[i % 3], names[(i // 3) % 3]
        image = Image.new("RGB", (72 + i % 5 * 8, 64), (250, 250, 250))
        ImageDraw.Draw(image).ellipse([8, 8, 56, 56], fill=COLOURS[colour])
        image.save(root / f"img/{i}.png")
        qa.append({"id": str(i), "image": f"img/{i}.png", "conversations": [
            {"from": "human", "value": f"<image>\nIs the circle {asked}?"},
            {"from": "gpt", "value": "Yes" if asked == colour else "No"}]})  # fmt: skip
        caption = [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": f"a {colour} circle"}]
        captions.append({"id": str(i), "image": f"img/{i}.png", "conversations": caption})
    qa.append({"id": "text", "conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi!"}]})
    for name, records in (("qa.json", qa), ("captions.json", captions)):
        (root / name).write_text("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n")
    return root


def train_command(setup, out, stage, settings, nproc=1, projector=None):
    base = {"global_batch_size": 4, "per_device_batch_size": 2, "deepspeed": "none", "gradient_checkpointing": False,
            "dataloader_workers": 0, "save_steps": 1000, "seed": 7}  # fmt: skip
    data = "qa.json" if stage == 2 else "captions.json"
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps({**base, **settings}))
    args = ["train", "--stage", str(stage), "--model", setup / "untrained", "--data", setup / data,
            "--image-root", setup, "--output", out / "final", "--work-dir", out / "work",
            "--settings", out / "settings.json"]  # fmt: skip
    if stage == 2:
        args += ["--projector", projector or setup / "projector"]
    launcher = [sys.executable, "-m", "clip_flant5"]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                    "--module", "clip_flant5"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    return [*launcher, *map(str, args)], env


def run(command, env, **kwargs):
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def metrics(path: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {row["step"]: row for row in rows}  # a resumed run may log a step twice; the last one counts


@pytest.mark.parametrize(
    "global_batch, per_device, world, expected",
    [(96, 6, 8, (6, 2)), (96, 6, 4, (6, 4)), (96, 6, 1, (6, 16)), (256, 32, 8, (32, 1)), (96, 5, 8, (4, 3)),
     (8, 16, 2, (4, 1))],
)  # fmt: skip
def test_global_batch_is_kept_for_any_process_count(global_batch, per_device, world, expected):
    per, accum = batch_layout(global_batch, per_device, world)
    assert (per, accum) == expected and per * accum * world == global_batch and per <= per_device
    with pytest.raises(ValueError, match="not divisible by 7 processes"):
        batch_layout(96, 6, 7)


def test_settings_default_to_the_published_recipe_and_reject_unknown_keys():
    stage1, stage2 = TrainSettings.from_dict(1, {}), TrainSettings.from_dict(2, {"learning_rate": 1e-4})
    assert (stage1.global_batch_size, stage1.learning_rate, stage1.template) == (256, 1e-2, "t5_plain_split_text")
    assert (stage2.global_batch_size, stage2.learning_rate, stage2.image_aspect_ratio) == (96, 1e-4, "pad")
    assert stage2.group_by_modality_length and stage2.deepspeed == "zero3"
    with pytest.raises(UserError, match="unknown settings \\['lr'\\]"):
        TrainSettings.from_dict(1, {"lr": 0.1})


def test_stage1_writes_the_projector_and_stage2_a_loadable_checkpoint(setup, tmp_path):
    run(*train_command(setup, tmp_path / "s1", 1, {"max_steps": 3, "learning_rate": 1e-3}))
    projector = torch.load(tmp_path / "s1/final/mm_projector.bin", weights_only=True)
    assert sorted(projector) == ["mm_projector.0.bias", "mm_projector.0.weight", "mm_projector.2.bias",
                                 "mm_projector.2.weight"]  # fmt: skip
    untrained = load_model(setup / "untrained")
    assert not torch.equal(projector["mm_projector.0.weight"].float(), untrained.mm_projector[0].weight)
    run(*train_command(setup, tmp_path / "s2", 2, {"max_steps": 3}, projector=tmp_path / "s1/final"))
    trained = load_model(tmp_path / "s2/final")
    assert not torch.equal(trained.lm_head.weight, untrained.lm_head.weight)  # T5 trained
    assert torch.equal(trained.vision_tower.vision_tower.post_layernorm.weight,  # CLIP frozen
                       untrained.vision_tower.vision_tower.post_layernorm.weight)  # fmt: skip
    assert (tmp_path / "s2/final/spiece.model").is_file()
    assert len(metrics(tmp_path / "s2/final/metrics.jsonl")) == 3
    assert (tmp_path / "s2/final/loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sigterm_then_rerun_equals_an_uninterrupted_run(setup, tmp_path):
    settings = {"max_steps": 60, "dropout": 0.1}
    run(*train_command(setup, tmp_path / "straight", 2, settings))

    command, env = train_command(setup, tmp_path / "killed", 2, settings)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "killed/work/metrics.jsonl"
    deadline = time.time() + 300
    while not (log.is_file() and len(log.read_text().splitlines()) >= 3) and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == EXIT_PREEMPTED, stderr[-3000:]
    assert not (tmp_path / "killed/final").exists()
    stopped_at = max(metrics(log))
    assert 3 <= stopped_at < 60
    assert (tmp_path / f"killed/work/checkpoint-{stopped_at}").is_dir()

    run(command, env)  # resumes from the checkpoint the SIGTERM left
    a = load_file(tmp_path / "straight/final/model.safetensors")
    b = load_file(tmp_path / "killed/final/model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) <= 1e-6
    assert metrics(log)[60]["loss"] == pytest.approx(metrics(tmp_path / "straight/work/metrics.jsonl")[60]["loss"])


def test_two_processes_give_the_loss_of_one(setup, tmp_path):
    settings = {"max_steps": 4, "dropout": 0.0, "group_by_modality_length": False, "learning_rate": 1e-3}
    run(*train_command(setup, tmp_path / "one", 2, settings))
    run(*train_command(setup, tmp_path / "two", 2, settings, nproc=2))
    one, two = metrics(tmp_path / "one/work/metrics.jsonl"), metrics(tmp_path / "two/work/metrics.jsonl")
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for step in one:
        assert two[step]["loss"] == pytest.approx(one[step]["loss"], rel=1e-5)
    a, b = load_file(tmp_path / "one/final/model.safetensors"), load_file(tmp_path / "two/final/model.safetensors")
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) <= 1e-5
    layout = json.loads((tmp_path / "two/final/training.json").read_text())
    assert (layout["world_size"], layout["per_device_batch_size"], layout["gradient_accumulation_steps"]) == (2, 2, 1)


class FakeClock:
    """Five minutes pass at every look at the clock (the policy looks once per step and once per save)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 300.0
        return self.now


def test_checkpoint_policy_saves_when_the_interval_has_passed_and_on_sigterm():
    from transformers import TrainerControl

    clock = FakeClock()
    policy = CheckpointPolicy(every_minutes=12, clock=clock)
    policy.on_train_begin(None, None, TrainerControl())
    decisions = []
    for _ in range(7):
        control = TrainerControl()
        policy.on_step_end(None, None, control)
        decisions.append(control.should_save)
        if control.should_save:
            policy.on_save(None, None, control)
    assert decisions == [False, False, True, False, False, True, False]  # 5, 10, 15 min; then again from the save
    never = CheckpointPolicy(every_minutes=None, clock=clock)
    control = TrainerControl()
    never.on_step_end(None, None, control)
    assert not control.should_save
    never._handle(signal.SIGTERM, None)
    never.on_step_end(None, None, control)
    assert control.should_save and control.should_training_stop and never.stop_requested


@pytest.mark.parametrize(("limit", "kept"), [(1, ["checkpoint-9"]), (2, ["checkpoint-6", "checkpoint-9"])])
def test_training_saves_by_wall_clock_time_and_keeps_only_the_newest(setup, tmp_path, monkeypatch, limit, kept):
    monkeypatch.setattr(train_module, "CLOCK", FakeClock())
    settings = TrainSettings.from_dict(2, {"global_batch_size": 2, "per_device_batch_size": 2, "deepspeed": "none",
                                           "gradient_checkpointing": False, "dataloader_workers": 0, "max_steps": 10,
                                           "save_every_minutes": 12, "save_total_limit": limit})  # fmt: skip
    before = signal.getsignal(signal.SIGTERM)
    code = train_module.train(2, model=str(setup / "untrained"), data=str(setup / "qa.json"), image_root=str(setup),
                              output=str(tmp_path / "final"), work_dir=str(tmp_path / "work"),
                              projector=str(setup / "projector"), settings=settings)  # fmt: skip
    assert code == 0
    # a library call leaves the process's SIGTERM handler as it found it (a forked child would inherit ours)
    assert signal.getsignal(signal.SIGTERM) is before
    # saved at steps 3, 6, 9 (15 minutes each time); no step-based save, none at the end
    assert sorted(p.name for p in (tmp_path / "work").glob("checkpoint-*")) == kept
    state = json.loads((tmp_path / "work" / kept[-1] / "trainer_state.json").read_text())
    assert state["global_step"] == 9
    with pytest.raises(UserError, match="save_every_minutes must be > 0, got 0"):
        TrainSettings.from_dict(2, {"save_every_minutes": 0})


class RecordingDataset(ConversationDataset):
    """The training dataset, logging every sample drawn (the epoch the dataset was told, index, labels: the cut)
    to `log`; the dataloader workers append to the same file."""

    log: Path | None = None

    def __getitem__(self, i):
        sample = super().__getitem__(i)
        with open(self.log, "a") as f:
            f.write(json.dumps({"epoch": self.epoch, "index": i, "labels": sample["labels"]}) + "\n")
        return sample


def drawn(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_each_epoch_draws_new_split_text_cuts_and_a_resumed_run_draws_the_same(setup, tmp_path, monkeypatch):
    words = "a small red circle drawn on a white square beside a tall blue line and a thin green arc".split()
    records = [{"id": str(i), "image": f"img/{i}.png", "conversations": [
        {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": " ".join(words[i:] + words[:i])}]}
        for i in range(8)]  # fmt: skip
    (tmp_path / "captions.json").write_text("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n")
    settings = TrainSettings.from_dict(1, {"global_batch_size": 2, "per_device_batch_size": 2, "epochs": 2,
                                           "deepspeed": "none", "gradient_checkpointing": False, "seed": 7,
                                           "dataloader_workers": 2, "save_every_minutes": None, "save_steps": 6,
                                           "save_total_limit": 2, "learning_rate": 1e-3})  # fmt: skip
    assert settings.template == "t5_plain_split_text"
    monkeypatch.setattr(train_module, "ConversationDataset", RecordingDataset)

    def train(out: Path):
        monkeypatch.setattr(RecordingDataset, "log", out / "drawn.jsonl")
        code = train_module.train(STAGES[1], model=str(setup / "untrained"), data=str(tmp_path / "captions.json"),
                                  image_root=str(setup), output=str(out / "final"), work_dir=str(out / "work"),
                                  settings=settings)  # fmt: skip
        assert code == 0
        return drawn(out / "drawn.jsonl")

    straight = train(tmp_path / "straight")  # 4 steps per epoch, a checkpoint at step 6: mid-epoch 2
    assert len(straight) == 16
    first, second = straight[:8], straight[8:]  # a new iterator (and new workers) per epoch, one after the other
    assert sorted(d["index"] for d in first) == sorted(d["index"] for d in second) == list(range(8))
    assert {d["epoch"] for d in first} == {0} and {d["epoch"] for d in second} == {1}  # the workers were told
    cuts = [{d["index"]: d["labels"] for d in epoch} for epoch in (first, second)]
    assert sum(cuts[0][i] != cuts[1][i] for i in range(8)) >= 6  # redrawn (a cut may repeat by chance)

    shutil.copytree(tmp_path / "straight/work", tmp_path / "resumed/work")
    shutil.rmtree(tmp_path / "resumed/work/checkpoint-8")  # as if the job had died after step 7
    resumed = train(tmp_path / "resumed")  # epoch 2 from its third batch
    sampler = SeededRandomSampler(8, seed=7)
    sampler.set_epoch(1)
    assert sorted(d["index"] for d in resumed) == sorted(list(sampler)[4:])
    assert all(d["labels"] == cuts[1][d["index"]] for d in resumed)
    assert any(d["labels"] != cuts[0][d["index"]] for d in resumed)  # not the first epoch's cuts


def test_train_refuses_what_it_cannot_honour(setup, tmp_path):
    def train(stage, projector=None, **values):
        settings = TrainSettings.from_dict(stage, {"deepspeed": "none", **values})
        train_module.train(stage, model=str(setup / "untrained"), data=str(setup / "qa.json"), image_root=str(setup),
                           output=str(tmp_path / "final"), work_dir=str(tmp_path / "work"), projector=projector,
                           settings=settings)  # fmt: skip

    with pytest.raises(UserError, match="stage2 starts from a trained projector: pass the stage-1 output"):
        train(2)
    with pytest.raises(UserError, match="stage1 trains the projector from its initialisation: drop --projector"):
        train(1, projector=str(setup / "projector"))
    with pytest.raises(UserError, match="dataloader_persistent_workers is not supported"):
        train(1, extra={"dataloader_persistent_workers": True})
    with pytest.raises(UserError, match="unknown training stage 3"):
        train_module.train(3, model="", data="", image_root="", output="", work_dir="", settings=TrainSettings())
    assert not (tmp_path / "work").exists()  # refused before anything was written


def test_a_work_folder_resumes_only_the_run_that_made_it(setup, tmp_path, capsys):
    """Checkpoints of a changed recipe or dataset are not resumed silently; a resumed run says from where."""
    values = {"global_batch_size": 2, "per_device_batch_size": 2, "deepspeed": "none", "gradient_checkpointing": False,
              "dataloader_workers": 0, "max_steps": 4, "save_steps": 2, "save_every_minutes": None}  # fmt: skip

    def run(data="qa.json", restart=False, **changes):
        settings = TrainSettings.from_dict(2, {**values, **changes})
        return train_module.train(2, model=str(setup / "untrained"), data=str(tmp_path / data), image_root=str(setup),
                                  output=str(tmp_path / "final"), work_dir=str(tmp_path / "work"),
                                  projector=str(setup / "projector"), settings=settings, restart=restart)  # fmt: skip

    shutil.copy(setup / "qa.json", tmp_path / "qa.json")
    assert run() == 0 and (tmp_path / "work/checkpoint-4").is_dir()
    with pytest.raises(UserError, match=r"work holds trainer checkpoints made from other inputs \(changed: "
                                        r"settings.learning_rate\).*--restart"):  # fmt: skip
        run(learning_rate=1e-3)
    lines = (tmp_path / "qa.json").read_text().splitlines()
    (tmp_path / "qa-changed.json").write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # one record fewer
    with pytest.raises(UserError, match=r"changed: data.sha256, data.size\)"):
        run(data="qa-changed.json")
    capsys.readouterr()
    assert run(max_steps=4, save_every_minutes=30) == 0  # when to checkpoint is no input: resumed
    assert f"resuming from {tmp_path / 'work/checkpoint-4'} at step 4" in capsys.readouterr().out
    assert run(learning_rate=1e-3, restart=True) == 0  # started over
    assert "resuming" not in capsys.readouterr().out
    assert json.loads((tmp_path / "work/provenance.json").read_text())["settings"]["learning_rate"] == 1e-3
