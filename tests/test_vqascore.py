"""The Python API: `clip_flant5.VQAScore(model)(images, texts)`, against the original scorer's VQAScores."""

import json
import math
import subprocess
import sys

import pytest
import torch
from PIL import Image

from clip_flant5 import UserError, VQAScore
from clip_flant5.variants import resolve_model


@pytest.fixture
def scorer(upstream):
    return VQAScore(str(upstream / "ckpt"), tokenizer=str(upstream / "base"), batch_size=3, images_per_chunk=2)


def reference(upstream) -> dict[tuple[str, str], float]:
    rows = map(json.loads, (upstream / "scores.jsonl").open())
    return {(r["image"], r["text"]): r["score"] for r in rows}


def close(a: float, b: float) -> bool:
    return abs(math.log(a) - math.log(b)) < 1e-5


def test_pairs_reproduce_the_original_scorer(scorer, upstream):
    ref = reference(upstream)
    images, texts = zip(*ref, strict=True)
    scores = scorer(images=list(images), texts=list(texts), pairs=True)
    assert scores.shape == (len(ref),)
    assert all(close(s, ref[pair]) for s, pair in zip(scores.tolist(), ref, strict=True))


def test_images_by_texts_matrix_from_paths_and_pil_images(scorer, upstream):
    ref = reference(upstream)
    images = sorted({image for image, _ in ref})[:3]
    texts = sorted({text for _, text in ref})[:4]
    from_paths = scorer(images, texts)
    assert from_paths.shape == (3, 4)
    for i, image in enumerate(images):
        for t, text in enumerate(texts):
            if (image, text) in ref:
                assert close(from_paths[i, t].item(), ref[(image, text)])
    pil = [Image.open(upstream / name) for name in images]
    assert torch.allclose(scorer(pil, texts), from_paths, rtol=1e-5, atol=0)
    assert scorer(images[0], texts[0]).shape == (1, 1)  # a lone image and text


def test_templates_and_score_kind_per_call(scorer, upstream):
    image, text = next(iter(reference(upstream)))
    published = scorer(image, text).item()
    first = scorer(image, text, score="first-token").item()
    asked = scorer(image, text, question_template='Is "{}" in the picture?').item()
    assert len({published, first, asked}) == 3
    assert scorer(image, text).item() == published  # the default settings stay in place
    assert scorer.engine().settings.question_template.startswith("Does this figure show")


def test_bad_calls_are_user_errors(scorer, upstream):
    with pytest.raises(UserError, match="one image per text: got 2 images and 1 texts"):
        scorer(["img0.png", "img1.png"], ["a cat"], pairs=True)
    with pytest.raises(UserError, match="texts must be non-empty"):
        scorer(["img0.png"], [""])
    with pytest.raises(UserError, match="question_template must contain"):
        scorer("img0.png", "a cat", question_template="Is it?")
    with pytest.raises(UserError, match="batch_size must be >= 1"):
        VQAScore(str(upstream / "ckpt"), tokenizer=str(upstream / "base"), batch_size=0)


def test_a_released_model_name_resolves_to_checkpoint_tokenizer_and_row():
    for name in ("clip-flant5-xxl", "zhiqiulin/clip-flant5-xxl"):
        source = resolve_model(name)
        assert (source.checkpoint, source.tokenizer) == ("zhiqiulin/clip-flant5-xxl", "google/flan-t5-xxl")
        assert source.published_row == "vqascore-clip-flant5-xxl"
    assert resolve_model("clip-flant5-xl", tokenizer="tok").tokenizer == "tok"
    assert resolve_model("results/models/x/stage2").tokenizer == "results/models/x/stage2"
    with pytest.raises(UserError, match="no released checkpoint"):
        resolve_model("clip-t5-xxl")


def test_importing_the_package_loads_no_model_workflow_or_plotting_code():
    code = "import sys, clip_flant5; print(sorted(m for m in ('torch', 'transformers', 'snakemake', 'matplotlib', "
    code += "'deepspeed', 'pandas') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
