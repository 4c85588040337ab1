"""The README's runnable example: build the tiny model with the CLI, then score with `clip_flant5.VQAScore`."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def example(name: str) -> str:
    """The fenced code block right after `<!-- readme-example: name -->` in the README."""
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- readme-example: {name} -->\n```\w+\n(.*?)```", text, re.S)
    assert match, f"README has no example {name!r}"
    return match.group(1)


def test_readme_vqascore_example_runs_on_the_tiny_model(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for line in example("tiny-model").strip().splitlines():
        run = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
    run = subprocess.run([sys.executable, "-c", example("vqascore")], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("torch.Size([2, 2]) tensor([[")
