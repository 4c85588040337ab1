"""Reading and writing CLIP-FlanT5 checkpoints in the published layout.

On disk (as `zhiqiulin/clip-flant5-*` and the original code wrote them): T5 keys, the alias
`embed_tokens.weight`, `mm_projector.{0,2}.*`, and the CLIP tower under
`vision_tower.vision_tower.vision_model.*` (transformers-4 naming; transformers 5 drops the
`vision_model.` level in memory). config.json says `model_type: "t5"` and `tie_word_embeddings:
false` for FlanT5, which transformers 4 needs to keep `lm_head` untied and unscaled.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download, split_torch_state_dict_into_shards
from huggingface_hub.errors import EntryNotFoundError, HFValidationError
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel, T5Config
from transformers.utils import logging as hf_logging

from .atomic import atomic_dir, atomic_path, write_json
from .model import CLIPT5Config, CLIPT5ForConditionalGeneration

CONFIG_NAME = "config.json"
PROJECTOR_NAME = "mm_projector.bin"
TOKENIZER_FILES = (
    "spiece.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
V4_VISION_PREFIX = "vision_tower.vision_tower.vision_model."
VISION_PREFIX = "vision_tower.vision_tower."
ALIAS_KEY = "embed_tokens.weight"  # the original model's alias of shared.weight
# Config keys transformers 5 adds that mean something else (or nothing) to the published loaders.
_CONFIG_KEYS_DROPPED_ON_SAVE = (
    "scale_decoder_outputs", "dtype", "output_attentions", "output_hidden_states", "return_dict",
    "_name_or_path", "id2label", "label2id", "problem_type", "chunk_size_feed_forward",
)  # fmt: skip


class CheckpointError(ValueError):
    pass


# -- config ---------------------------------------------------------------------------------------
def load_config(path: str | os.PathLike, vision_tower: str | None = None) -> CLIPT5Config:
    """CLIPT5Config from a checkpoint folder; accepts `model_type` "t5" (published) or "clip_t5".

    The vision tower's config is made inline (`mm_vision_config`): a relative `mm_vision_tower`
    is looked up beside the checkpoint, then in the working directory, as the original tools did.
    `vision_tower` replaces the checkpoint's `mm_vision_tower` (e.g. a local copy of the CLIP model).
    """
    config_file = _config_file(path)
    raw = json.loads(config_file.read_text())
    if raw.get("model_type") not in ("t5", "clip_t5"):
        raise CheckpointError(f"{config_file}: model_type {raw.get('model_type')!r} is not 't5' or 'clip_t5'")
    if not raw.get("mm_vision_tower"):
        raise CheckpointError(
            f"{config_file} has no mm_vision_tower: this is a plain T5 checkpoint, not CLIP-FlanT5 "
            "(build one with `clip-flant5 init-model`)"
        )
    raw = _without_file_metadata(raw)
    if vision_tower is not None:
        raw.update(mm_vision_tower=str(vision_tower), mm_vision_config=None)
    if not raw.get("mm_vision_config"):
        local = _local_vision_tower(raw["mm_vision_tower"], config_file.parent)
        if local is not None:
            raw["mm_vision_config"] = vision_config_dict(CLIPVisionConfig.from_pretrained(local))
    return CLIPT5Config(**raw)


def _config_file(path) -> Path:
    """config.json of a local checkpoint folder or of a hub repository (e.g. zhiqiulin/clip-flant5-xxl)."""
    if Path(path).is_dir():
        config_file = Path(path) / CONFIG_NAME
        if not config_file.is_file():
            raise CheckpointError(f"{config_file} not found: a CLIP-FlanT5 checkpoint folder holds a config.json")
        return config_file
    if Path(path).is_absolute() or str(path).startswith((".", "~")) or Path(path).exists():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    try:
        return Path(hf_hub_download(str(path), CONFIG_NAME))
    except (HFValidationError, OSError) as err:  # includes offline mode and unknown repositories
        raise CheckpointError(f"{path} is neither a checkpoint folder nor a reachable hub model id ({err})") from err


def _local_vision_tower(name: str, checkpoint_dir: Path) -> Path | None:
    candidates = [Path(name)] if Path(name).is_absolute() else [checkpoint_dir / name, Path.cwd() / name]
    return next((c for c in candidates if (c / CONFIG_NAME).is_file()), None)


def vision_config_dict(config: CLIPVisionConfig) -> dict:
    keep = (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
        "image_size", "patch_size", "projection_dim", "hidden_act", "layer_norm_eps",
        "attention_dropout", "initializer_range", "initializer_factor",
    )  # fmt: skip
    return {k: getattr(config, k) for k in keep}


def config_for_disk(config, **overrides) -> dict:
    """A config dict the published loaders (transformers 4.x) read as intended."""
    data = config.to_dict()
    # transformers 5 always writes tie_word_embeddings=true for T5 and keeps the real choice in
    # scale_decoder_outputs; transformers 4 would tie lm_head to the embedding and rescale.
    if hasattr(config, "scale_decoder_outputs"):
        data["tie_word_embeddings"] = bool(config.scale_decoder_outputs)
    for key in _CONFIG_KEYS_DROPPED_ON_SAVE:
        data.pop(key, None)
    data.update(overrides)
    return dict(sorted(data.items()))


# -- state dicts ------------------------------------------------------------------------------------
def published_state_dict(state_dict: dict, dtype: torch.dtype | None) -> dict:
    """A model state dict under the published key names, the alias included, cast to `dtype`."""
    out = {}
    for key, tensor in state_dict.items():
        if key.startswith(VISION_PREFIX):
            key = V4_VISION_PREFIX + key[len(VISION_PREFIX) :]
        out[key] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
    out[ALIAS_KEY] = out["shared.weight"]
    return out


def _unshare(state_dict: dict) -> dict:
    """safetensors refuses tensors that share memory: store each alias as its own copy."""
    seen, out = set(), {}
    for key, tensor in state_dict.items():
        ptr = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        out[key] = tensor.detach().clone().contiguous() if ptr in seen else tensor.detach().contiguous()
        seen.add(ptr)
    return out


def write_weights(state_dict: dict, out_dir: Path, fmt: str = "safetensors", max_shard_size="5GB") -> list[str]:
    """Write `model.safetensors` or `pytorch_model.bin`, sharded with an index when large."""
    if fmt not in ("safetensors", "bin"):
        raise ValueError(f"unknown weights format {fmt!r}; valid: safetensors, bin")
    pattern = "model{suffix}.safetensors" if fmt == "safetensors" else "pytorch_model{suffix}.bin"
    state_dict = _unshare(state_dict)
    split = split_torch_state_dict_into_shards(state_dict, filename_pattern=pattern, max_shard_size=max_shard_size)
    for filename, keys in split.filename_to_tensors.items():
        shard = {k: state_dict[k] for k in keys}
        if fmt == "safetensors":
            save_file(shard, out_dir / filename, metadata={"format": "pt"})  # transformers 4 checks "format"
        else:
            torch.save(shard, out_dir / filename)
    if split.is_sharded:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state_dict.values())}}
        index["weight_map"] = split.tensor_to_filename
        name = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
        (out_dir / name).write_text(json.dumps(index, indent=2) + "\n")
    return sorted(split.filename_to_tensors)


# -- whole checkpoints --------------------------------------------------------------------------------
def load_model(
    path: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    vision_tower: str | None = None,
    **config_overrides,
) -> CLIPT5ForConditionalGeneration:
    """Load a CLIP-FlanT5 checkpoint (published or ours): .bin or .safetensors, sharded or not.

    Raises if any weight is missing or any key is left over beyond `model.IGNORED_CHECKPOINT_KEYS`.
    `config_overrides` set config fields before the model is built (e.g. dropout_rate).
    """
    config = load_config(path, vision_tower)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    model, info = CLIPT5ForConditionalGeneration.from_pretrained(
        path, config=config, dtype=dtype, output_loading_info=True
    )
    problems = {k: sorted(info[k]) for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info[k]}
    if problems:
        raise CheckpointError(f"{path}: weights do not match the model: {problems}")
    return model.to(device).eval()


def save_model(
    model: CLIPT5ForConditionalGeneration,
    out_dir: str | os.PathLike,
    *,
    tokenizer_dir: str | os.PathLike | None = None,
    dtype: torch.dtype | None = torch.bfloat16,
    fmt: str = "safetensors",
    max_shard_size="5GB",
    config_overrides: dict | None = None,
    state_dict: dict | None = None,
) -> Path:
    """Write a full checkpoint in the published layout, atomically (temp folder + rename).

    `state_dict` replaces the model's own (e.g. weights gathered from ZeRO-3 shards).
    """
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        overrides = {
            "model_type": "t5",
            "architectures": [type(model).__name__],
            "torch_dtype": str(dtype or model.dtype).removeprefix("torch."),
            **(config_overrides or {}),
        }
        write_json(tmp / CONFIG_NAME, config_for_disk(model.config, **overrides))
        model.generation_config.to_json_file(tmp / "generation_config.json")
        weights = published_state_dict(state_dict if state_dict is not None else model.state_dict(), dtype)
        write_weights(weights, tmp, fmt=fmt, max_shard_size=max_shard_size)
        if tokenizer_dir is not None:
            copy_tokenizer(tokenizer_dir, tmp)
    return out_dir


def copy_tokenizer(source: str | os.PathLike, dest: str | os.PathLike) -> list[str]:
    """Copy the base model's tokenizer files verbatim (a local folder or a hub id).

    Verbatim, not re-saved: transformers 5 would write neither spiece.model nor the
    special-token files that transformers 4 loaders read.
    """
    dest = Path(dest)
    if Path(source).is_dir():
        found = [Path(source) / name for name in TOKENIZER_FILES if (Path(source) / name).is_file()]
    else:
        found = []
        for name in TOKENIZER_FILES:
            try:
                found.append(Path(hf_hub_download(str(source), name)))
            except EntryNotFoundError:
                continue
    if not any(f.name == "spiece.model" for f in found):
        raise CheckpointError(f"no spiece.model in {source}: give the base FlanT5 model's folder or hub id")
    for f in found:
        shutil.copyfile(f, dest / f.name)
    return sorted(f.name for f in found)


def init_model(
    vision: str,
    language: str,
    *,
    projector_type: str = "mlp2x_gelu",
    select_layer: int = -2,
    select_feature: str = "patch",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> CLIPT5ForConditionalGeneration:
    """An untrained CLIP-FlanT5: CLIP weights from `vision`, T5 weights from `language` (local folders
    or hub ids), a freshly initialised projector (seeded)."""
    vision_config = CLIPVisionConfig.from_pretrained(vision)
    t5 = load_t5_config(language)
    config = CLIPT5Config(
        **t5,
        mm_vision_tower=_hub_name(vision),
        mm_vision_config=vision_config_dict(vision_config),
        mm_hidden_size=vision_config.hidden_size,
        mm_projector_type=projector_type,
        mm_vision_select_layer=select_layer,
        mm_vision_select_feature=select_feature,
    )
    torch.manual_seed(seed)
    with _quiet_transformers():  # its load report lists the CLIP and projector weights, checked below
        model, info = CLIPT5ForConditionalGeneration.from_pretrained(
            language, config=config, dtype=dtype, output_loading_info=True
        )
    not_from_t5 = {k for k in info["missing_keys"] if not k.startswith(("vision_tower.", "mm_projector."))}
    if not_from_t5 or info["unexpected_keys"] or info["mismatched_keys"]:
        raise CheckpointError(
            f"{language} is not a T5 checkpoint of the expected shape: missing {sorted(not_from_t5)}, "
            f"unexpected {sorted(info['unexpected_keys'])}, mismatched {sorted(info['mismatched_keys'])}"
        )
    clip = CLIPVisionModel.from_pretrained(vision, dtype=dtype)
    model.vision_tower.vision_tower.load_state_dict(clip.state_dict())
    return model.eval()


def _hub_name(path: str) -> str:
    """A base model's name as configs record it: the hub id of a snapshot fetched by clip-flant5 fetch-model (the
    published checkpoints name `openai/clip-vit-large-patch14-336`, not a folder of one machine), else the path."""
    from .download.snapshot import hub_origin

    return (hub_origin(path) or str(path)) if Path(path).is_dir() else str(path)


def load_t5_config(language: str) -> dict:
    """The base T5 config as a dict (local folder or hub id), keeping FlanT5's untied lm_head."""
    config = T5Config.from_pretrained(language)
    return _without_file_metadata(config_for_disk(config))


def _without_file_metadata(data: dict) -> dict:
    """Config fields minus what describes the file rather than the model (set again when saving)."""
    skip = ("model_type", "transformers_version", "architectures", "torch_dtype", "dtype")
    return {k: v for k, v in data.items() if k not in skip}


# -- stage-1 projector --------------------------------------------------------------------------------
def save_projector(
    model: CLIPT5ForConditionalGeneration,
    out_dir: str | os.PathLike,
    dtype=torch.bfloat16,
    **config_overrides,
) -> Path:
    """Stage-1 output: `mm_projector.bin` (keys `mm_projector.*`) and config.json, atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {f"mm_projector.{k}": v.detach().to(dtype).clone() for k, v in model.mm_projector.state_dict().items()}
    with atomic_path(out_dir / PROJECTOR_NAME) as tmp:
        torch.save(weights, tmp)
    overrides = {"model_type": "t5", "architectures": [type(model).__name__], **config_overrides}
    write_json(out_dir / CONFIG_NAME, config_for_disk(model.config, **overrides))
    return out_dir / PROJECTOR_NAME


def load_projector(model: CLIPT5ForConditionalGeneration, path: str | os.PathLike) -> None:
    """Load `mm_projector.bin` (a file or the folder holding it) into the model's projector."""
    path = Path(path)
    if path.is_dir():
        path = path / PROJECTOR_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} not found: stage 2 needs the stage-1 projector (mm_projector.bin)")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    # Strip everything up to and including "mm_projector." as the original loader did.
    weights = {k.split("mm_projector.", 1)[1]: v for k, v in raw.items() if "mm_projector." in k}
    expected = set(model.mm_projector.state_dict())
    if set(weights) != expected or len(weights) != len(raw):
        raise CheckpointError(
            f"{path}: projector keys {sorted(raw)} do not match the model's "
            f"{sorted('mm_projector.' + k for k in expected)} (mm_projector_type {model.config.mm_projector_type})"
        )
    for name, tensor in model.mm_projector.state_dict().items():
        if weights[name].shape != tensor.shape:
            raise CheckpointError(
                f"{path}: mm_projector.{name} has shape {tuple(weights[name].shape)}, "
                f"the model expects {tuple(tensor.shape)}"
            )
    model.mm_projector.load_state_dict(weights)  # copies into the model's dtype


@contextlib.contextmanager
def _quiet_transformers():
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
