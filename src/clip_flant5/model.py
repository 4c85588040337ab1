"""CLIP-FlanT5: a frozen CLIP vision tower, a projector and a FlanT5 encoder-decoder.

The prompt goes to the T5 encoder with the projected patch features of the image spliced in at the
image token (-200); the answer is the decoder target. Module names follow the published checkpoints
(`vision_tower.vision_tower.*`, `mm_projector.{0,2}.*`); the renames between the transformers-4 key
layout on disk and this module tree live in `checkpoint.py`.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    CLIPVisionConfig,
    CLIPVisionModel,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers import initialization as init

from .errors import UserError
from .prompts import IMAGE_TOKEN_INDEX

PROJECTOR_TYPES = ("linear", "mlpNx_gelu", "identity")
SELECT_FEATURES = ("patch", "cls_patch")

# Vision configs of the towers the published models use, so that the published checkpoints (whose
# config.json names the tower but does not describe it) load on compute nodes without network.
KNOWN_VISION_CONFIGS = {
    "openai/clip-vit-large-patch14-336": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    ),
    "openai/clip-vit-large-patch14": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    ),
}  # fmt: skip


# Keys a published checkpoint may hold that this model does not load, and why.
IGNORED_CHECKPOINT_KEYS = {
    r"^embed_tokens\.weight$": "alias of shared.weight that the original model kept as an attribute",
    r"^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight$": "unused by T5",
    r"^vision_tower\.vision_tower\.(vision_model\.)?embeddings\.position_ids$": "a constant buffer",
}


# Attention implementations (transformers' `attn_implementation` names). T5 has no flash-attn path: its relative
# position bias is an additive float mask that flash-attn kernels do not take (transformers declares T5
# `_supports_flash_attn = False`); SDPA takes it as `attn_mask`. The CLIP tower has no bias and no mask.
LANGUAGE_ATTENTION = "sdpa"
FLASH_ATTENTION = "flash_attention_2"


def flash_attn_importable() -> bool:
    """Whether `import flash_attn` succeeds (installed AND built for this torch: a wheel built against another
    torch is found by pip but fails to import with an undefined symbol)."""
    try:
        import flash_attn  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def choose_attention(device: str | torch.device, dtype: torch.dtype = torch.bfloat16) -> dict[str, str]:
    """Attention implementations for a model that will run on `device` in `dtype`:
    {"language": "sdpa", "vision": "flash_attention_2" or "sdpa"}.

    The vision tower gets flash-attn on a CUDA device in bf16/fp16 when `flash_attn` imports (the `gpu` extra),
    SDPA otherwise; T5 always SDPA (see LANGUAGE_ATTENTION). Apply with `model.set_attention(...)`. What
    transformers 5 builds by default is SDPA for every sub-model (CLIPVisionModel is built in __init__ from its
    own config, so `from_pretrained(attn_implementation=...)` does not reach it)."""
    device = torch.device(device)
    half = dtype in (torch.bfloat16, torch.float16)
    vision = FLASH_ATTENTION if device.type == "cuda" and half and flash_attn_importable() else "sdpa"
    return {"language": LANGUAGE_ATTENTION, "vision": vision}


class CLIPT5Config(T5Config):
    """A FlanT5 config plus the LLaVA-style `mm_*` fields of the published checkpoints.

    `mm_vision_config` (ours, optional) holds the vision tower's config so a checkpoint is
    self-describing; the published files lack it and name the tower by `mm_vision_tower` only.
    """

    model_type = "clip_t5"

    mm_vision_tower: str | None = None
    mm_vision_config: dict | None = None
    mm_hidden_size: int = 1024
    mm_projector_type: str = "mlp2x_gelu"
    mm_vision_select_layer: int = -2
    mm_vision_select_feature: str = "patch"
    use_mm_proj: bool = True
    image_aspect_ratio: str = "pad"
    image_grid_pinpoints: list | None = None
    tune_mm_mlp_adapter: bool = False
    freeze_mm_mlp_adapter: bool = False
    mm_use_im_start_end: bool = False
    mm_use_im_patch_token: bool = False

    def vision_config(self) -> CLIPVisionConfig:
        """The CLIP vision config: inline, a built-in known tower, or the tower's own config.json."""
        if self.mm_vision_config:
            return CLIPVisionConfig(**self.mm_vision_config)
        if self.mm_vision_tower is None:
            raise UserError("config has no `mm_vision_tower`: a CLIP-FlanT5 config must name its vision tower")
        if self.mm_vision_tower in KNOWN_VISION_CONFIGS:
            return CLIPVisionConfig(**KNOWN_VISION_CONFIGS[self.mm_vision_tower])
        try:
            return CLIPVisionConfig.from_pretrained(self.mm_vision_tower)
        except OSError as err:
            raise UserError(
                f"cannot find the vision tower config for mm_vision_tower={self.mm_vision_tower!r}: "
                "give a local CLIP folder or a reachable hub id (load through clip_flant5.checkpoint, which "
                "also resolves paths relative to the checkpoint folder)"
            ) from err


def build_projector(projector_type: str, in_features: int, out_features: int) -> nn.Module:
    """`linear`, `mlpNx_gelu` (N linears with exact-erf GELUs between) or `identity`."""
    if projector_type == "linear":
        return MultimodalProjector(nn.Linear(in_features, out_features))
    match = re.fullmatch(r"mlp(\d+)x_gelu", projector_type)
    if match:
        layers: list[nn.Module] = [nn.Linear(in_features, out_features)]
        for _ in range(int(match.group(1)) - 1):
            layers += [nn.GELU(), nn.Linear(out_features, out_features)]
        return MultimodalProjector(*layers)
    if projector_type == "identity":
        if in_features != out_features:
            raise UserError(f"identity projector needs mm_hidden_size == d_model, got {in_features} != {out_features}")
        return MultimodalProjector(nn.Identity())
    raise UserError(f"unknown mm_projector_type {projector_type!r}; valid: linear, mlp<N>x_gelu, identity")


class MultimodalProjector(nn.Sequential):
    """nn.Sequential so its keys read `mm_projector.0.*`, `mm_projector.2.*` as in the checkpoints."""


class CLIPVisionTower(nn.Module):
    """The frozen CLIP tower. Always runs without gradients; returns the selected layer's features."""

    def __init__(self, vision_config: CLIPVisionConfig, select_layer: int, select_feature: str):
        super().__init__()
        if select_feature not in SELECT_FEATURES:
            raise UserError(f"unknown mm_vision_select_feature {select_feature!r}; valid: {SELECT_FEATURES}")
        self.vision_tower = CLIPVisionModel(vision_config)
        self.vision_tower.requires_grad_(False)
        self.select_layer = select_layer
        self.select_feature = select_feature

    @property
    def num_patches(self) -> int:
        cfg = self.vision_tower.config
        return (cfg.image_size // cfg.patch_size) ** 2 + (self.select_feature == "cls_patch")

    @property
    def image_size(self) -> int:
        return self.vision_tower.config.image_size

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.vision_tower.embeddings.patch_embedding.weight.dtype
        out = self.vision_tower(pixel_values.to(dtype), output_hidden_states=True)
        # The penultimate layer without post_layernorm, as LLaVA-1.5 selects it.
        features = out.hidden_states[self.select_layer]
        return features[:, 1:] if self.select_feature == "patch" else features


class CLIPT5ForConditionalGeneration(T5ForConditionalGeneration):
    config_class = CLIPT5Config
    config: CLIPT5Config
    _keys_to_ignore_on_load_unexpected = list(IGNORED_CHECKPOINT_KEYS)
    _no_split_modules = ["T5Block", "CLIPEncoderLayer"]
    accepts_loss_kwargs = True  # forward honours num_items_in_batch (see forward)

    def __init__(self, config: CLIPT5Config):
        super().__init__(config)
        self.vision_tower = CLIPVisionTower(
            config.vision_config(), config.mm_vision_select_layer, config.mm_vision_select_feature
        )
        self.mm_projector = build_projector(config.mm_projector_type, config.mm_hidden_size, config.d_model)
        self.post_init()

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict:
        tied = super().get_expanded_tied_weights_keys(all_submodels=all_submodels)
        # transformers 5 ties T5's lm_head unless a checkpoint proves otherwise; FlanT5's lm_head is its
        # own matrix (tie_word_embeddings=false, which transformers 5 records as scale_decoder_outputs).
        if not self.config.scale_decoder_outputs:
            tied.pop("lm_head.weight", None)
        return tied

    def _init_weights(self, module):
        # T5.__init__ initialises before the projector exists, hence the getattr.
        if isinstance(module, nn.Linear) and any(module is layer for layer in getattr(self, "mm_projector", ())):
            # PyTorch's default Linear init, as the original built the projector after loading T5
            # (T5's init would draw it with std = initializer_factor = 1.0). transformers' init
            # functions leave weights loaded from a checkpoint alone.
            bound = module.in_features**-0.5
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            init.uniform_(module.bias, -bound, bound)
            return
        super()._init_weights(module)

    # -- attention --------------------------------------------------------------------------------
    def set_attention(self, attention: dict[str, str]) -> dict[str, str]:
        """Set the attention implementation of T5 (`attention["language"]`: its encoder and decoder stacks) and
        of the CLIP tower (`attention["vision"]`), e.g. `model.set_attention(choose_attention(device, dtype))`
        once the weights are on their device. Returns `attention_implementations()`."""
        unknown = set(attention) - {"language", "vision"}
        if unknown:
            raise ValueError(f"unknown attention keys {sorted(unknown)}; valid: language, vision")
        if "language" in attention:
            # transformers hands the value down to every sub-model, the CLIP tower too: set the tower after.
            vision_now = self.vision_tower.vision_tower.config._attn_implementation
            self.set_attn_implementation(attention["language"])
            self.vision_tower.vision_tower.set_attn_implementation(attention.get("vision", vision_now))
        elif "vision" in attention:
            self.vision_tower.vision_tower.set_attn_implementation(attention["vision"])
        return self.attention_implementations()

    def attention_implementations(self) -> dict[str, str]:
        """{"language": T5's implementation, "vision": the CLIP tower's}."""
        language = {self.config._attn_implementation, self.encoder.config._attn_implementation,
                    self.decoder.config._attn_implementation}  # fmt: skip
        if len(language) != 1:
            raise RuntimeError(f"T5's encoder and decoder use different attention implementations: {language}")
        return {"language": language.pop(), "vision": self.vision_tower.vision_tower.config._attn_implementation}

    # -- images -------------------------------------------------------------------------------
    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] pixels -> [N, P, d_model] projected patch features (CLIP frozen)."""
        features = self.vision_tower(pixel_values)
        projector_dtype = next(self.mm_projector.parameters(), features).dtype
        return self.mm_projector(features.to(projector_dtype))

    def embed_multimodal(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        image_features: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings with each row's -200 replaced by that row's P image features.

        Rows are right-padded; a row holds at most one image token. Rows without one (text-only
        samples) ignore their entry of `image_features`, so a batch can mix both while every rank
        still runs the vision tower (ZeRO-3 needs every rank in every collective). Returns
        (inputs_embeds [B, L', D], attention_mask [B, L']) with L' = L - 1 + P if any row has an image.
        """
        batch, length = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if (attention_mask[:, 1:] > attention_mask[:, :-1]).any():
            raise ValueError("attention_mask is not right-padded: CLIP-FlanT5 inputs use right padding only")
        is_image = input_ids == IMAGE_TOKEN_INDEX
        per_row = is_image.sum(1)
        if (per_row > 1).any():
            row = int(per_row.argmax())
            raise ValueError(f"row {row} of input_ids holds {int(per_row[row])} image tokens; at most 1 per sample")
        has_image = per_row.bool()
        text_embeds = self.shared(input_ids.clamp(min=0))
        if not has_image.any():
            return text_embeds, attention_mask
        if image_features is None:
            raise ValueError(f"input_ids hold {int(has_image.sum())} image tokens but no images were given")
        if image_features.shape[0] != batch:
            raise ValueError(
                f"got {image_features.shape[0]} images for a batch of {batch} samples: give one image per "
                "sample (a dummy image for text-only samples)"
            )
        n_patches = image_features.shape[1]
        positions = torch.arange(length, device=input_ids.device)
        image_pos = torch.where(has_image, is_image.int().argmax(1), length)
        # Text tokens after the image move right by P - 1; the image token's own slot is overwritten.
        target = positions + (n_patches - 1) * (positions[None, :] > image_pos[:, None])
        new_length = length + n_patches - 1
        dim = text_embeds.shape[-1]
        embeds = text_embeds.new_zeros(batch, new_length, dim)
        embeds = embeds.scatter(1, target[..., None].expand(-1, -1, dim), text_embeds)
        mask = attention_mask.new_zeros(batch, new_length).scatter(1, target, attention_mask)
        rows = has_image.nonzero().squeeze(1)
        cols = image_pos[rows, None] + torch.arange(n_patches, device=input_ids.device)
        rows = rows[:, None].expand_as(cols)
        embeds = embeds.index_put((rows, cols), image_features[rows[:, 0]].to(embeds.dtype))
        mask = mask.index_put((rows, cols), mask.new_ones(()))
        return embeds, mask

    def _encoder_inputs(self, input_ids, attention_mask, images, image_features):
        if image_features is None and images is not None:
            image_features = self.get_image_features(images)
        return self.embed_multimodal(input_ids, attention_mask, image_features)

    # -- forward / generate ---------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_outputs=None,
        labels: torch.LongTensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ):
        """T5 forward with images. `images` are pixels [B,3,S,S]; `image_features` are projected
        features [B,P,D] computed once elsewhere (e.g. one image scored against many texts).

        With `num_items_in_batch` (the label tokens of the whole global batch, which the Trainer passes)
        the loss is the sum over this micro-batch's tokens divided by it, so that gradient accumulation
        and any number of processes give the token mean of the global batch.
        """
        if input_ids is not None and inputs_embeds is None and encoder_outputs is None:
            inputs_embeds, attention_mask = self._encoder_inputs(input_ids, attention_mask, images, image_features)
            input_ids = None
        if labels is not None and num_items_in_batch is not None:
            if kwargs.get("decoder_input_ids") is None and kwargs.get("decoder_inputs_embeds") is None:
                kwargs["decoder_input_ids"] = self._shift_right(labels)
            out = super().forward(
                attention_mask=attention_mask, inputs_embeds=inputs_embeds, encoder_outputs=encoder_outputs, **kwargs
            )
            total = nn.functional.cross_entropy(
                out.logits.flatten(0, 1).float(), labels.flatten().to(out.logits.device), reduction="sum"
            )
            out.loss = total / num_items_in_batch
            return out
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            encoder_outputs=encoder_outputs,
            labels=labels,
            **kwargs,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        **generation_kwargs,
    ):
        """Generate answers; every usual generation argument (max_new_tokens, num_beams, do_sample,
        generation_config, ...) is passed through to transformers' `generate`."""
        if input_ids is not None:
            inputs_embeds, attention_mask = self._encoder_inputs(input_ids, attention_mask, images, image_features)
            generation_kwargs["inputs_embeds"] = inputs_embeds
        return super().generate(attention_mask=attention_mask, **generation_kwargs)

    # -- training helpers -----------------------------------------------------------------------
    def set_trainable(self, *, train_language: bool) -> None:
        """The projector trains; T5 too when `train_language` (stage 2, `Stage.trains_language`). CLIP never."""
        self.requires_grad_(train_language)
        self.mm_projector.requires_grad_(True)
        self.vision_tower.requires_grad_(False)


AutoConfig.register("clip_t5", CLIPT5Config)
AutoModelForSeq2SeqLM.register(CLIPT5Config, CLIPT5ForConditionalGeneration)
