"""Reading and writing CLIP-FlanT5 checkpoints in the published layout.

On disk (as `zhiqiulin/clip-flant5-*` and the original code wrote them): T5 keys, the alias
`embed_tokens.weight`, `mm_projector.{0,2}.*`, and the CLIP tower under
`vision_tower.vision_tower.vision_model.*` (transformers-4 naming; transformers 5 drops the
`vision_model.` level in memory). config.json says `model_type: "t5"` and `tie_word_embeddings:
false` for FlanT5, which transformers 4 needs to keep `lm_head` untied and unscaled.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

import torch
from accelerate import init_empty_weights
from huggingface_hub import hf_hub_download, split_torch_state_dict_into_shards
from huggingface_hub.errors import EntryNotFoundError, HFValidationError
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel, T5Config
from transformers import initialization as init
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.utils import logging as hf_logging

from .atomic import atomic_dir, atomic_path, write_json
from .errors import UserError
from .model import IGNORED_CHECKPOINT_KEYS, CLIPT5Config, CLIPT5ForConditionalGeneration, choose_attention

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


class CheckpointError(UserError):
    pass


# -- config ---------------------------------------------------------------------------------------
def load_config(path: str | os.PathLike, vision_tower: str | None = None) -> CLIPT5Config:
    """CLIPT5Config from a checkpoint folder; accepts `model_type` "t5" (published) or "clip_t5".

    The vision tower's config is made inline (`mm_vision_config`): a relative `mm_vision_tower`
    is looked up beside the checkpoint, then in the working directory, as the original tools did.
    `vision_tower` replaces the checkpoint's `mm_vision_tower` (e.g. a local copy of the CLIP model).
    """
    config_file = _config_file(path)
    try:
        raw = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{config_file} is not valid JSON ({err}): the checkpoint is damaged; fetch it again"
        ) from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_file}: expected a JSON object of model settings")
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
        raise UserError(f"unknown weights format {fmt!r}; valid: safetensors, bin")
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
# Weight files in the order transformers looks for them (safetensors first).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def load_model(
    path: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    vision_tower: str | None = None,
    **config_overrides,
) -> CLIPT5ForConditionalGeneration:
    """Load a CLIP-FlanT5 checkpoint (published or ours): .bin or .safetensors, sharded or not.

    Raises if any weight is missing or any key is left over beyond `model.IGNORED_CHECKPOINT_KEYS`. Attention:
    `model.choose_attention` (the CLIP tower on flash-attn on a GPU where it is installed, SDPA otherwise).
    `config_overrides` set config fields before the model is built (e.g. dropout_rate).

    Memory: the model is built without weights (parameters on the meta device, buffers on `device`) and filled
    one shard at a time: each tensor goes to `device` as stored (a GPU gets the checkpoint's bytes) and is
    converted to `dtype` there, and a shard is released before the next is read; within a memory-mapped .bin
    shard, the pages of each copied tensor are handed back at once. Peak host memory: the weights in `dtype` plus
    about one tensor on the CPU, about one tensor on a GPU. A .bin tensor already in `dtype` on the CPU is used in
    place (memory-mapped from the file, no copy), as transformers does. Tied weights are tied as from_pretrained
    ties them. Under DeepSpeed ZeRO-3 (zero.Init) it is transformers' from_pretrained.
    """
    config = load_config(path, vision_tower)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    if is_deepspeed_zero3_enabled():  # zero.Init partitions the weights as they load: transformers' own path
        model, info = CLIPT5ForConditionalGeneration.from_pretrained(
            path, config=config, dtype=dtype, output_loading_info=True
        )
        problems = {k: sorted(info[k]) for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info[k]}
        if problems:
            raise CheckpointError(f"{path}: weights do not match the model: {problems}")
        return model.to(device).eval()
    files, keys = _weight_files(path)
    config.name_or_path = str(path)  # as from_pretrained records it
    device = torch.device(device)
    with torch.device(device), init_empty_weights(include_buffers=False), init.no_init_weights():
        model = CLIPT5ForConditionalGeneration._from_config(config, dtype=dtype)
    _load_weights(model, path, files, keys, device)
    model.set_attention(choose_attention(device, dtype))  # after the weights: flash-attn checks where they are
    model.adjust_generation_fn(  # the generation config as from_pretrained reads it (generation_config.json or config)
        generation_config=None, from_auto_class=False, from_pipeline=False, pretrained_model_name_or_path=str(path),
        cache_dir=None, force_download=False, proxies=None, local_files_only=False, token=None, revision=None,
        subfolder="", trust_remote_code=False,
    )  # fmt: skip
    return model.eval()


def _weight_files(path) -> tuple[list[Path], set[str] | None]:
    """The checkpoint's weight files (downloaded if `path` is a hub id) and, when sharded, all its keys."""
    for name in WEIGHT_FILES:
        found = _checkpoint_file(path, name)
        if found is None:
            continue
        if not name.endswith(".index.json"):
            return [found], None
        try:
            weight_map = json.loads(found.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{found}: not a shard index with a weight_map ({err})") from err
        shards = []
        for shard in dict.fromkeys(weight_map.values()):
            shards.append(_checkpoint_file(path, shard))
            if shards[-1] is None:
                raise CheckpointError(f"{found} names {shard}, which is not in {path}")
        return shards, set(weight_map)
    raise CheckpointError(f"{path} holds no weights: none of {', '.join(WEIGHT_FILES)}")


def _checkpoint_file(path, name: str) -> Path | None:
    if Path(path).is_dir():
        return Path(path) / name if (Path(path) / name).is_file() else None
    try:
        return Path(hf_hub_download(str(path), name))
    except EntryNotFoundError:
        return None
    except (HFValidationError, OSError) as err:
        raise CheckpointError(f"cannot fetch {name} of {path} ({err})") from err


@contextlib.contextmanager
def _open_shard(file: Path):
    """(keys, iterator of (key, tensor), release) of one weight file, read lazily; closed on exit.

    safetensors: read tensor by tensor (pread, no mapping). .bin: memory-mapped (torch.load mmap=True); once a
    tensor has been copied, `release(tensor)` hands its pages back, so that only the tensor being read is resident,
    not the whole file.
    """
    if file.suffix == ".safetensors":
        try:
            handle = safe_open(file, framework="pt", device="cpu", backend="pread")
        except TypeError:  # safetensors < 0.8: memory-mapped, released with the file
            handle = safe_open(file, framework="pt", device="cpu")
        with handle as f:
            keys = list(f.keys())
            yield keys, ((k, f.get_tensor(k)) for k in keys), lambda tensor: None
        return
    mapped = zipfile.is_zipfile(file)  # mmap needs the zip format (torch >= 1.6); an older file is read whole
    state = torch.load(file, map_location="cpu", weights_only=True, mmap=mapped)
    if not isinstance(state, dict):
        raise CheckpointError(f"{file} is not a state dict (a {type(state).__name__})")
    try:
        yield list(state), ((k, state.pop(k)) for k in list(state)), _drop_pages if mapped else lambda tensor: None
    finally:
        del state


def _drop_pages(tensor: torch.Tensor) -> None:
    """madvise(MADV_DONTNEED) on the whole pages of a tensor memory-mapped from a checkpoint (Linux).

    torch.load maps the file and nothing has written to it during the load, so the pages are clean copies of the
    file: they leave the process's resident set, and whatever reads them again (an alias of the same bytes, a
    weight the model uses in place) gets them from the file. Only pages wholly inside the tensor are dropped.
    """
    if _LIBC is None or tensor.device.type != "cpu":
        return
    page = mmap.PAGESIZE
    start = -(-tensor.data_ptr() // page) * page
    end = (tensor.data_ptr() + tensor.numel() * tensor.element_size()) // page * page
    if end > start:
        _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), mmap.MADV_DONTNEED)


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _load_weights(model, path, files: list[Path], keys: set[str] | None, device: torch.device) -> None:
    """Fill an empty (meta) model from the weight files, one shard at a time, checking every key."""
    expected = model.state_dict()  # meta tensors: the names, shapes and dtypes the model wants
    tied = dict(model.all_tied_weights_keys)  # target -> source, e.g. encoder.embed_tokens.weight -> shared.weight
    fp32 = _keep_in_fp32(model, expected)
    if keys is not None:  # sharded: the index names every key, so check them before reading any data
        _check_names(path, expected, tied, keys)
    loaded, mismatched = {}, []
    for file in files:
        with _open_shard(file) as (shard_keys, tensors, release):
            if keys is None:
                _check_names(path, expected, tied, shard_keys)
            batch = {}
            for key, tensor in tensors:
                name = _model_key(key)
                if name not in expected:
                    continue  # an ignored key (_check_names raised on any other)
                if tensor.shape != expected[name].shape:
                    mismatched.append(f"{key}: {tuple(tensor.shape)} in the checkpoint, {tuple(expected[name].shape)} "
                                      "in the model")  # fmt: skip
                    continue
                # As stored to the device (a GPU gets the checkpoint's bytes, no host copy), then converted there;
                # both are no-ops for a tensor already in place, which the model then uses as it is.
                value = tensor.to(device).to(torch.float32 if name in fp32 else expected[name].dtype)
                source = loaded.get(tied.get(name))
                if source is not None and _same(source, value):
                    release(tensor)
                    continue  # a tied copy (the alias of shared.weight): tie_weights below shares the source
                if value is not tensor:
                    release(tensor)  # copied: the file's pages are no longer needed
                batch[name] = loaded[name] = value
            tensor = value = None  # no reference into this shard outlives it
            model.load_state_dict(batch, strict=False, assign=True)  # keeps each parameter's requires_grad
            del batch
    if mismatched:
        raise CheckpointError(f"{path}: weights do not match the model: {{'mismatched_keys': {sorted(mismatched)}}}")
    # As from_pretrained: a tied target absent from the checkpoint (or skipped above as equal) becomes its source;
    # one whose checkpoint copy differs stays its own tensor (transformers warns).
    model.tie_weights(missing_keys=set(expected) - set(loaded), recompute_mapping=False)
    left = [k for k, t in model.state_dict().items() if t.is_meta and device.type != "meta"]
    if left:  # _check_names let every key through that tie_weights would fill
        raise CheckpointError(f"{path}: weights do not match the model: {{'missing_keys': {sorted(left)}}}")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.is_meta or (a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b))


def _model_key(key: str) -> str:
    """A checkpoint key under this model's names (transformers 5 drops CLIP's `vision_model.` level)."""
    return VISION_PREFIX + key[len(V4_VISION_PREFIX) :] if key.startswith(V4_VISION_PREFIX) else key


def _check_names(path, expected: dict, tied: dict[str, str], checkpoint_keys) -> None:
    """Raise on keys the model lacks (beyond IGNORED_CHECKPOINT_KEYS) and on weights the checkpoint lacks."""
    names = {_model_key(k) for k in checkpoint_keys}
    ignored = [re.compile(p) for p in IGNORED_CHECKPOINT_KEYS]
    unexpected = sorted(
        k
        for k in checkpoint_keys
        if _model_key(k) not in expected and not any(p.search(k) or p.search(_model_key(k)) for p in ignored)
    )
    # A tied pair needs one of its two names (from_pretrained ties either way round).
    partner = {**tied, **{source: target for target, source in tied.items()}}
    missing = sorted(k for k in expected if k not in names and partner.get(k) not in names)
    problems = {k: v for k, v in (("missing_keys", missing), ("unexpected_keys", unexpected)) if v}
    if problems:
        raise CheckpointError(f"{path}: weights do not match the model: {problems}")


def _keep_in_fp32(model, expected: dict) -> set[str]:
    """Weights from_pretrained keeps in fp32 in a low-precision load (T5's `wo` in fp16, as transformers does)."""
    dtype = model.dtype
    modules = set(model._keep_in_fp32_modules or ()) if dtype == torch.float16 else set()
    if dtype in (torch.float16, torch.bfloat16):
        modules |= set(model._keep_in_fp32_modules_strict or ())
    if not modules:
        return set()
    return {name for name in expected if any(m in name.split(".") for m in modules)}


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
    with atomic_path(out_dir / PROJECTOR_NAME) as tmp, open(tmp, "wb") as f:
        torch.save(weights, f)  # a file object: the archive's inner name is fixed, not the temporary file's
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
