"""What we save loads in transformers 4.49 the way the original CLIP-T5 code loaded the published files.

Runs tests/transformers4/load_checkpoint.py in a separate virtual environment with transformers 4.49
(built once into ~/.cache/clip-flant5/, about a minute; CLIP_FLANT5_TF4_PYTHON names an existing
interpreter instead).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clip_flant5.checkpoint import save_model

SCRIPT = Path(__file__).parent / "transformers4" / "load_checkpoint.py"
REQUIREMENTS = ["torch==2.13.0", "transformers==4.49.0", "sentencepiece", "protobuf"]
TEXTS = ["A red circle on the left of a blue square.", 'Does this figure show "two stars"? Please answer yes or no.']


@pytest.fixture(scope="session")
def tf4_python() -> str:
    if os.environ.get("CLIP_FLANT5_TF4_PYTHON"):
        return os.environ["CLIP_FLANT5_TF4_PYTHON"]
    venv = Path.home() / ".cache" / "clip-flant5" / "transformers-4.49-venv"
    marker = venv / "requirements.txt"
    if not marker.is_file() or marker.read_text() != "\n".join(REQUIREMENTS):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        install = subprocess.run(
            [venv / "bin" / "python", "-m", "pip", "install", "-q", *REQUIREMENTS], capture_output=True, text=True
        )
        assert install.returncode == 0, f"could not build the transformers 4.49 environment:\n{install.stderr[-2000:]}"
        marker.write_text("\n".join(REQUIREMENTS))
    return str(venv / "bin" / "python")


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_transformers4_loads_our_checkpoint_like_the_original(
    tf4_python, tiny_model, tiny_base, tiny_tokenizer, tmp_path, fmt
):
    checkpoint = save_model(
        tiny_model, tmp_path / "ckpt", tokenizer_dir=tiny_base / "language", dtype=torch.float32, fmt=fmt
    )
    ids = torch.tensor([[5, 6, -200, 7, 8, 1], [9, 10, 11, 1, 0, 0], [-200, 12, 1, 0, 0, 0]])
    inputs = {
        "input_ids": ids,
        "images": torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)),
        "labels": torch.tensor([[12, 13, 1], [14, 1, -100], [15, 16, 1]]),
        "texts": TEXTS,
    }
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [tf4_python, SCRIPT, checkpoint, tmp_path / "inputs.pt", tmp_path / "out.pt"],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt")
    assert out["missing_keys"] == [] and out["unexpected_keys"] == [] and out["mismatched_keys"] == []
    assert out["lm_head_tied"] is False
    with torch.no_grad():
        ours = tiny_model(
            input_ids=ids, attention_mask=(ids != 0).long(), images=inputs["images"], labels=inputs["labels"]
        )
    for row, n in enumerate([3, 2, 3]):  # compare where labels are real
        torch.testing.assert_close(out["logits"][row, :n], ours.logits[row, :n], rtol=1e-5, atol=1e-5)
    assert out["token_ids"] == [tiny_tokenizer(t).input_ids for t in TEXTS]
