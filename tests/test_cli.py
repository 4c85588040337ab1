"""The clip-flant5 command line, run as users run it."""

import json
import os
import subprocess
import sys

from safetensors.torch import load_file

CLI = [sys.executable, "-m", "clip_flant5"]
REQUIRED_CONFIG = [
    "mm_vision_tower",
    "mm_hidden_size",
    "mm_projector_type",
    "mm_vision_select_layer",
    "mm_vision_select_feature",
]


def run(*args, check=True):
    result = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_tiny_base_then_init_model_then_ask(tmp_path):
    run("tiny-base", "--out", tmp_path / "tb")
    run(
        "init-model",
        "--vision",
        tmp_path / "tb/vision",
        "--language",
        tmp_path / "tb/language",
        "--out",
        tmp_path / "m",
    )
    config = json.loads((tmp_path / "m/config.json").read_text())
    assert config["architectures"] == ["CLIPT5ForConditionalGeneration"]
    assert all(key in config for key in REQUIRED_CONFIG)
    keys = set(load_file(tmp_path / "m/model.safetensors"))
    assert {"embed_tokens.weight", "mm_projector.0.weight", "mm_projector.2.bias"} <= keys
    assert "vision_tower.vision_tower.vision_model.post_layernorm.weight" in keys

    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.png")
    answer = run("ask", "--model", tmp_path / "m", "--image", tmp_path / "red.png", "--question", "What colour?")
    assert answer.stdout.strip()  # an untrained model says something; the command works end to end
    beams = run("ask", "--model", tmp_path / "m", "--image", tmp_path / "red.png", "--question", "What?",
                "--num-beams", "3", "--max-new-tokens", "2")  # fmt: skip
    assert beams.stdout.strip()


def test_bad_input_is_one_clear_line(tmp_path):
    result = run("ask", "--model", tmp_path / "nothing", "--image", "x.png", "--question", "q", check=False)
    assert result.returncode == 2
    assert "no such checkpoint folder" in result.stderr and "Traceback" not in result.stderr
    result = run("init-model", "--variant", "xxxl", "--out", tmp_path / "m", check=False)
    assert result.returncode == 2 and "valid: clip-flant5-xxl, clip-flant5-xl" in result.stderr


def test_variants_lists_the_registry():
    lines = [json.loads(line) for line in run("variants").stdout.splitlines()]
    names = {v["name"]: v for v in lines}
    assert names["clip-flant5-xxl"]["published"] == "zhiqiulin/clip-flant5-xxl"
    assert names["clip-flant5-xl"]["language"] == "google/flan-t5-xl"
    assert names["clip-flant5-xxl-no-split-text"]["stage1_template"] == "t5_plain"
    assert names["clip-t5-xxl"]["language"] == "t5-11b"


def test_threads_are_shared_by_the_processes_of_a_node_before_torch_starts():
    """Snakemake sets OMP_NUM_THREADS to a job's threads; under torchrun each process takes its share, set in the
    environment before torch is imported (see clip_flant5.cli._use_threads)."""
    code = ("import sys; from clip_flant5.cli import _use_threads; _use_threads(8); assert 'torch' not in sys.modules; "
            "import os, torch; print(torch.get_num_threads(), os.environ['OMP_NUM_THREADS'])")  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "8", "LOCAL_WORLD_SIZE": "4"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["2", "2"]


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
    import pytest

    from clip_flant5 import cli
    from clip_flant5.errors import UserError

    def fail_with(error):
        def command(args):
            raise error

        monkeypatch.setattr(cli, "cmd_variants", command)
        return cli.main(["variants"])

    with pytest.raises(SystemExit) as exit_:
        fail_with(UserError("config.json: not a checkpoint"))
    assert (
        exit_.value.code == 2
        and "clip-flant5 variants: error: config.json: not a checkpoint" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        fail_with(ModuleNotFoundError("no module", name="matplotlib"))
    assert "pip install 'clip-flant5[workflow]'" in capsys.readouterr().err
    with pytest.raises(KeyError):  # not a user error: a bug, with its traceback
        fail_with(KeyError("score"))
    with pytest.raises(ValueError):
        fail_with(ValueError("a plain ValueError is a bug too"))


def test_score_settings_come_from_a_file_and_flags_and_are_checked_at_the_edge(tmp_path, upstream):
    pairs = upstream / "pairs.jsonl"
    base = ["score", "--model", upstream / "ckpt", "--tokenizer", upstream / "base", "--pairs", pairs]
    (tmp_path / "s.json").write_text(json.dumps({"score": "first-token", "batch_size": 4}))
    run(*base, "--settings", tmp_path / "s.json", "--batch-size", "2", "--out", tmp_path / "first.jsonl")
    run(*base, "--out", tmp_path / "published.jsonl")
    first = [json.loads(line)["score"] for line in open(tmp_path / "first.jsonl")]
    published = [json.loads(line)["score"] for line in open(tmp_path / "published.jsonl")]
    assert len(first) == len(published) == 16 and all(f >= p for f, p in zip(first, published, strict=True))
    (tmp_path / "bad.json").write_text("{batch_size: 4}")
    (tmp_path / "unknown.json").write_text('{"batchsize": 4}')
    for args, message in [
        (["--settings", tmp_path / "bad.json"], f"--settings {tmp_path / 'bad.json'}: not JSON"),
        (["--settings", tmp_path / "unknown.json"], "unknown settings ['batchsize']"),
        (["--batch-size", "0"], "scoring setting batch_size must be >= 1, got 0"),
        (["--images-per-chunk", "-1"], "scoring setting images_per_chunk must be >= 1, got -1"),
        (["--shard", "3/2"], "argument --shard: must be i/n with n >= 1 and 0 <= i < n, got '3/2'"),
        (["--shard", "0/0"], "argument --shard: must be i/n with n >= 1"),
        (["--question-template", "Is it?"], "question_template must contain {}"),
    ]:
        result = run(*base, *args, "--out", tmp_path / "x.jsonl", check=False)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_numeric_flags_are_checked_at_the_edge(tmp_path):
    for args, message in [
        (["check-devices", "--expect-gpus", "-1"], "argument --expect-gpus: must be >= 0, got -1"),
        (["make-demo-data", "--out", tmp_path, "--scale", "-1"], "argument --scale: must be > 0, got -1"),
        (["ask", "--model", "m", "--image", "i", "--question", "q", "--temperature", "0"], "must be > 0, got 0"),
        (["ask", "--model", "m", "--image", "i", "--question", "q", "--top-p", "1.5"], "must be <= 1, got 1.5"),
        (["validate-data", "x.json", "--image-root", ".", "--jobs", "0"], "must be a positive integer, got 0"),
    ]:
        result = run(*args, check=False)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
