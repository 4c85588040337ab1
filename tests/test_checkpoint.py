"""Checkpoints in the published layout: loading, saving, projector files, the upstream fixture."""

import gc
import json
import math
import shutil
import weakref

import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

from clip_flant5.checkpoint import (
    CheckpointError,
    config_for_disk,
    load_config,
    load_model,
    load_projector,
    save_model,
    save_projector,
    write_weights,
)
from clip_flant5.images import load_and_preprocess
from clip_flant5.inference import load_tokenizer
from clip_flant5.model import CLIPT5ForConditionalGeneration
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fmt, shard", [("bin", None), ("bin", "200KB"), ("safetensors", "200KB")])
def test_load_gives_the_model_from_pretrained_gives(tiny_model, tmp_path, dtype, fmt, shard):
    """load_model fills the model itself (shard by shard); transformers' from_pretrained is the reference."""
    path = write_published(tiny_model, tmp_path / "ckpt", fmt=fmt, shard=shard, dtype=torch.bfloat16)
    ours = load_model(path, dtype=dtype)
    reference = CLIPT5ForConditionalGeneration.from_pretrained(path, config=load_config(path), dtype=dtype).eval()
    state, expected = ours.state_dict(), reference.state_dict()
    assert list(state) == list(expected)
    for key, tensor in expected.items():  # the same values in the same dtypes (fp16: T5 keeps `wo` in fp32)
        assert state[key].dtype == tensor.dtype and torch.equal(state[key], tensor), key
    params = dict(ours.named_parameters(remove_duplicate=False))
    reference_params = dict(reference.named_parameters(remove_duplicate=False))

    def tied_groups(named):
        return sorted(sorted(k for k in named if named[k] is p) for p in named.values())

    assert tied_groups(params) == tied_groups(reference_params)  # the embeddings tied, lm_head its own
    trains = {k: p.requires_grad for k, p in params.items() if not k.startswith("vision_tower.")}
    assert trains == {k: p.requires_grad for k, p in reference_params.items() if not k.startswith("vision_tower.")}
    # CLIP stays frozen as the model builds it (from_pretrained's fresh Parameters would make it trainable).
    assert not any(p.requires_grad for k, p in params.items() if k.startswith("vision_tower."))
    assert all(torch.equal(b, reference.get_buffer(k)) for k, b in ours.named_buffers())
    assert ours.config.to_dict() == reference.config.to_dict()
    assert ours.generation_config.to_dict() == reference.generation_config.to_dict()
    assert ours.attention_implementations() == reference.attention_implementations()
    assert not ours.training


class _OpenShards:
    """Wraps torch.load: at each call, counts the tensors of the files loaded before that are still alive."""

    def __init__(self, load):
        self.load, self.earlier, self.alive_at_open = load, [], []

    def __call__(self, *args, **kwargs):
        gc.collect()
        self.alive_at_open.append(sum(ref() is not None for ref in self.earlier))
        state = self.load(*args, **kwargs)
        self.earlier += [weakref.ref(t) for t in state.values()]
        return state


def test_shards_are_read_one_at_a_time(tiny_model, tmp_path, monkeypatch):
    """A bf16 shard loaded in fp32 is released before the next is read: peak memory is the weights + one shard
    (transformers 5's from_pretrained maps every shard first and holds them all until the end)."""
    path = write_published(tiny_model, tmp_path / "ckpt", shard="200KB", dtype=torch.bfloat16)
    assert len(list(path.glob("pytorch_model-*.bin"))) > 3
    spy = _OpenShards(torch.load)
    monkeypatch.setattr(torch, "load", spy)
    model = load_model(path, dtype=torch.float32)
    assert len(spy.alive_at_open) == len(list(path.glob("pytorch_model-*.bin")))
    assert spy.alive_at_open == [0] * len(spy.alive_at_open)
    assert model.shared.weight.dtype == torch.float32


class _HostCopies(TorchDispatchMode):
    """Counts the float tensors that dtype or device copies (aten._to_copy) make in host memory."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten._to_copy.default and out.device.type == "cpu" and out.is_floating_point():
            self.count += 1
        return out


def test_weights_go_to_the_device_as_stored_and_convert_there(tiny_model, tmp_path):
    """The GPU path, run on the meta device (no GPU here; the code is the same for any device): the model is built
    there and each tensor is sent as stored in the checkpoint, then converted on the device, so the host never
    holds a converted copy. (The old from_pretrained + .to(device) converted every weight on the host, in worker
    threads this dispatch mode does not see, and its .to("meta") untied the embeddings.)"""
    path = write_published(tiny_model, tmp_path / "ckpt", shard="200KB", dtype=torch.bfloat16)
    with _HostCopies() as copies:
        model = load_model(path, dtype=torch.float32, device="meta")
    assert copies.count == 0
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.encoder.embed_tokens.weight is model.shared.weight
    assert model.lm_head.weight is not model.shared.weight


def test_shape_and_file_errors_are_checkpoint_errors(tiny_model, tmp_path):
    path = write_published(tiny_model, tmp_path / "ckpt", shard="200KB")
    index = json.loads((path / "pytorch_model.bin.index.json").read_text())
    shard = index["weight_map"]["mm_projector.2.bias"]
    (path / shard).rename(path / "elsewhere.bin")
    with pytest.raises(CheckpointError, match=f"names {shard}, which is not in"):
        load_model(path)
    state = torch.load(path / "elsewhere.bin", weights_only=True)
    state["mm_projector.2.bias"] = torch.zeros(3)
    torch.save(state, path / shard)
    with pytest.raises(CheckpointError, match=r"mismatched_keys.*mm_projector\.2\.bias: \(3,\) in the checkpoint"):
        load_model(path)
    for weights in path.glob("*.bin*"):
        weights.unlink()
    with pytest.raises(CheckpointError, match="holds no weights"):
        load_model(path)
    (path / "config.json").write_text('{"model_type": "t5",')  # cut short
    with pytest.raises(CheckpointError, match=r"ckpt/config.json is not valid JSON .*: the checkpoint is damaged"):
        load_model(path)


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
