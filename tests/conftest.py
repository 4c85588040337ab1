import os

# Tests never touch the network: hub lookups fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "upstream-tiny"


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    from clip_flant5.tiny import make_tiny_base

    return make_tiny_base(tmp_path_factory.mktemp("tiny") / "base", seed=0)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_base):
    from clip_flant5.inference import load_tokenizer

    return load_tokenizer(tiny_base / "language")


@pytest.fixture
def tiny_model(tiny_base):
    """A fresh untrained tiny CLIP-FlanT5 in fp32, eval mode (dropout off)."""
    from clip_flant5.checkpoint import init_model

    return init_model(str(tiny_base / "vision"), str(tiny_base / "language"), seed=0)


@pytest.fixture
def upstream(monkeypatch) -> Path:
    """The upstream fixture folder as working directory: its config names the tower "vision"
    relative to it, as the original tools resolved it."""
    monkeypatch.chdir(FIXTURE)
    return FIXTURE


@pytest.fixture
def workdir(tmp_path):
    """A copy of the workflow (Snakemake locks its working directory and writes results/ there)."""
    for name in ("workflow", "config", "envs", "profiles"):
        shutil.copytree(Path(__file__).resolve().parents[1] / name, tmp_path / name)
    return tmp_path
