"""Checkpoints in the published layout: loading, saving, projector files, the upstream fixture."""

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from clip_flant5.checkpoint import (
    CheckpointError,
    config_for_disk,
    load_model,
    load_projector,
    save_model,
    save_projector,
    write_weights,
)
from clip_flant5.images import load_and_preprocess
from clip_flant5.inference import load_tokenizer
from clip_flant5.prompts import scoring_prompt, tokenize_with_image

# Key names of the published checkpoints (spec model.md), written out rather than derived from code.
PUBLISHED_KEYS = [
    "shared.weight",
    "embed_tokens.weight",
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "lm_head.weight",
    "encoder.block.0.layer.0.SelfAttention.q.weight",
    "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
    "encoder.block.1.layer.1.DenseReluDense.wi_0.weight",
    "encoder.block.1.layer.1.DenseReluDense.wi_1.weight",
    "encoder.block.1.layer.1.DenseReluDense.wo.weight",
    "encoder.final_layer_norm.weight",
    "decoder.block.1.layer.1.EncDecAttention.k.weight",
    "decoder.block.1.layer.2.DenseReluDense.wo.weight",
    "decoder.final_layer_norm.weight",
    "mm_projector.0.weight",
    "mm_projector.0.bias",
    "mm_projector.2.weight",
    "mm_projector.2.bias",
    "vision_tower.vision_tower.vision_model.embeddings.class_embedding",
    "vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight",
    "vision_tower.vision_tower.vision_model.pre_layrnorm.weight",
    "vision_tower.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight",
    "vision_tower.vision_tower.vision_model.post_layernorm.bias",
]


def sample_inputs(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.tensor([[5, 6, -200, 7, 8, 1], [9, 10, 11, 1, 0, 0]])
    size = model.vision_tower.image_size
    return dict(
        input_ids=ids,
        attention_mask=(ids != 0).long(),
        images=torch.randn(2, 3, size, size, generator=gen),
        labels=torch.tensor([[12, 13, 1], [14, 1, -100]]),
    )


def logits(model, seed=0):
    with torch.no_grad():
        return model.eval()(**sample_inputs(model, seed)).logits


def published_layout(model, naming="v4"):
    """The model's weights renamed by hand the way the original code saved them."""
    out = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("vision_tower.vision_tower.") and naming == "v4":
            key = "vision_tower.vision_tower.vision_model." + key.removeprefix("vision_tower.vision_tower.")
        out[key] = tensor.clone()
    out["embed_tokens.weight"] = out["shared.weight"]
    vision = "vision_tower.vision_tower.vision_model." if naming == "v4" else "vision_tower.vision_tower."
    out[vision + "embeddings.position_ids"] = torch.arange(65)[None]  # older transformers saved it
    return out


def write_published(model, path, *, naming="v4", fmt="bin", shard=None, model_type="t5", dtype=None):
    path.mkdir(parents=True)
    state = published_layout(model, naming)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    config = config_for_disk(model.config, model_type=model_type, architectures=["CLIPT5ForConditionalGeneration"])
    (path / "config.json").write_text(json.dumps(config))
    write_weights(state, path, fmt=fmt, max_shard_size=shard or "5GB")
    return path


@pytest.mark.parametrize(
    "naming, fmt, shard, model_type",
    [
        ("v4", "bin", None, "t5"),  # as zhiqiulin/clip-flant5-xl
        ("v4", "bin", "200KB", "t5"),  # sharded with pytorch_model.bin.index.json, as -xxl
        ("v4", "safetensors", None, "t5"),  # the later hub revision
        ("v4", "safetensors", "200KB", "clip_t5"),
        ("v5", "safetensors", None, "t5"),  # written by transformers 5
    ],
)
def test_published_layout_loads_with_identical_logits(tiny_model, tmp_path, naming, fmt, shard, model_type):
    path = write_published(tiny_model, tmp_path / "ckpt", naming=naming, fmt=fmt, shard=shard, model_type=model_type)
    if shard:
        assert len(list(path.glob("*.index.json"))) == 1
    loaded = load_model(path)  # raises on any missing or unexpected key
    assert torch.equal(logits(loaded), logits(tiny_model))
    assert loaded.lm_head.weight is not loaded.shared.weight


def test_bf16_published_weights_load(tiny_model, tmp_path):
    path = write_published(tiny_model, tmp_path / "ckpt", dtype=torch.bfloat16)
    loaded = load_model(path, dtype=torch.bfloat16)
    assert loaded.shared.weight.dtype == torch.bfloat16
    reference = tiny_model.to(torch.bfloat16)
    assert torch.equal(loaded.shared.weight, reference.shared.weight)
    assert torch.equal(loaded.lm_head.weight, reference.lm_head.weight)


@pytest.mark.parametrize("change", ["drop", "extra"])
def test_missing_or_unexpected_keys_are_errors(tiny_model, tmp_path, change):
    path = tmp_path / "ckpt"
    path.mkdir()
    state = published_layout(tiny_model)
    if change == "drop":
        del state["mm_projector.2.bias"]
    else:
        state["mm_projector.4.weight"] = torch.zeros(3)
    (path / "config.json").write_text(json.dumps(config_for_disk(tiny_model.config, model_type="t5")))
    torch.save(state, path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"mm_projector\.(2\.bias|4\.weight)"):
        load_model(path)


def test_save_writes_the_published_layout(tiny_model, tiny_base, tmp_path):
    out = save_model(tiny_model, tmp_path / "m", tokenizer_dir=tiny_base / "language")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["CLIPT5ForConditionalGeneration"]
    assert config["model_type"] == "t5"
    assert config["tie_word_embeddings"] is False and "scale_decoder_outputs" not in config
    assert config["torch_dtype"] == "bfloat16"
    expected = {
        "mm_hidden_size": 64,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "use_mm_proj": True,
        "image_aspect_ratio": "pad",
        "image_grid_pinpoints": None,
        "freeze_mm_mlp_adapter": False,
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "mm_vision_tower": str(tiny_base / "vision"),
    }
    assert {k: config[k] for k in expected} == expected
    state = load_file(out / "model.safetensors")
    assert set(PUBLISHED_KEYS) <= set(state)
    vision = [k for k in state if k.startswith("vision_tower.")]
    assert vision and all(k.startswith("vision_tower.vision_tower.vision_model.") for k in vision)
    assert all(t.dtype == torch.bfloat16 for t in state.values())
    assert torch.equal(state["embed_tokens.weight"], state["shared.weight"])
    assert {"spiece.model", "tokenizer_config.json", "special_tokens_map.json"} <= {f.name for f in out.iterdir()}
    assert json.loads((out / "generation_config.json").read_text())["decoder_start_token_id"] == 0


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_save_load_round_trip_gives_identical_outputs(tiny_model, tmp_path, fmt):
    out = save_model(tiny_model, tmp_path / "m", dtype=torch.float32, fmt=fmt, max_shard_size="300KB")
    assert torch.equal(logits(load_model(out)), logits(tiny_model))
    # saving over an existing checkpoint replaces it whole
    save_model(tiny_model, out, dtype=torch.float32, fmt="safetensors")
    assert torch.equal(logits(load_model(out)), logits(tiny_model))
    assert not list(out.glob("pytorch_model*"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left behind


def test_projector_file_round_trip(tiny_model, tiny_base, tmp_path):
    from clip_flant5.checkpoint import init_model

    path = save_projector(tiny_model, tmp_path / "stage1", tune_mm_mlp_adapter=True, image_aspect_ratio="square")
    raw = torch.load(path, weights_only=True)
    assert sorted(raw) == [
        "mm_projector.0.bias",
        "mm_projector.0.weight",
        "mm_projector.2.bias",
        "mm_projector.2.weight",
    ]
    assert all(t.dtype == torch.bfloat16 for t in raw.values())
    config = json.loads((tmp_path / "stage1" / "config.json").read_text())
    assert config["tune_mm_mlp_adapter"] is True and config["image_aspect_ratio"] == "square"
    fresh = init_model(str(tiny_base / "vision"), str(tiny_base / "language"), seed=7)
    assert not torch.equal(fresh.mm_projector[0].weight, tiny_model.mm_projector[0].weight)
    load_projector(fresh, tmp_path / "stage1")
    for key, tensor in raw.items():
        assert torch.equal(fresh.state_dict()[key], tensor.float())


def test_projector_file_errors_name_the_file(tiny_model, tmp_path):
    with pytest.raises(CheckpointError, match="mm_projector.bin not found"):
        load_projector(tiny_model, tmp_path)
    bad = tmp_path / "mm_projector.bin"
    torch.save({"mm_projector.0.weight": torch.zeros(64, 64)}, bad)
    with pytest.raises(CheckpointError, match=str(bad)):
        load_projector(tiny_model, bad)
    torch.save({k: torch.zeros(1) for k in ["0.weight", "0.bias", "2.weight", "2.bias"]}, bad)
    with pytest.raises(CheckpointError, match="do not match"):
        load_projector(tiny_model, bad)


def test_plain_t5_checkpoint_is_rejected(tiny_base):
    with pytest.raises(CheckpointError, match="no mm_vision_tower"):
        load_model(tiny_base / "language")


def test_relative_vision_tower_resolves_beside_the_checkpoint(tiny_model, tiny_base, tmp_path, monkeypatch):
    path = write_published(tiny_model, tmp_path / "ckpt")
    shutil.copytree(tiny_base / "vision", path / "clip")
    config = json.loads((path / "config.json").read_text())
    config.update(mm_vision_tower="clip", mm_vision_config=None)
    (path / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    assert torch.equal(logits(load_model(path)), logits(tiny_model))
    config["mm_vision_tower"] = "nowhere-clip"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="nowhere-clip"):
        load_model(path)
    assert torch.equal(logits(load_model(path, vision_tower=str(path / "clip"))), logits(tiny_model))


def test_upstream_fixture_loads_and_reproduces_the_original_scores(upstream):
    """The original code's checkpoint loads key for key and gives the original scorer's VQAScores."""
    model = load_model(upstream / "ckpt")  # bf16 weights, upcast to fp32 as the reference was
    tokenizer = load_tokenizer(upstream / "base")
    vocab = len(tokenizer)  # the published scorer's softmax runs over the tokenizer's 32100, not 32128
    assert vocab < model.config.vocab_size
    answer = torch.tensor([tokenizer("Yes").input_ids])
    assert answer.shape[1] == 2
    for line in (upstream / "scores.jsonl").read_text().splitlines():
        pair = json.loads(line)
        ids = torch.tensor([tokenize_with_image(scoring_prompt(pair["text"]), tokenizer)])
        image = load_and_preprocess(upstream / pair["image"], model.vision_tower.image_size, "pad")[None]
        with torch.no_grad():
            out = model(input_ids=ids, images=image, labels=answer).logits[..., :vocab]
        log_score = -torch.nn.functional.cross_entropy(out[0], answer[0]).item()
        assert abs(log_score - math.log(pair["score"])) < 1e-5, pair
