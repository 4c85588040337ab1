"""The clip-flant5 command line, run as users run it."""

import json
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
