"""Named CLIP-FlanT5 variants (the published model zoo plus the demo's tiny model), queried by name."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import UserError

# Kept free of torch imports: the workflow reads the registry when it parses the Snakefile.
DEFAULT_VISION_TOWER = "openai/clip-vit-large-patch14-336"


@dataclass(frozen=True)
class Variant:
    name: str
    language: str | None  # base T5 (hub id); None: built by `clip-flant5 tiny-base`
    vision: str | None = DEFAULT_VISION_TOWER
    projector: str = "mlp2x_gelu"
    stage1_template: str = "t5_plain_split_text"
    stage1_global_batch_size: int | None = None  # None: the recipe's (256)
    published: str | None = None  # hub id of the released checkpoint, if any
    published_stage1: str | None = None  # hub id of its released stage-1 projector (mm_projector.bin), if any
    published_row: str | None = None  # its row of the paper's main table (clip_flant5/published.yaml)
    init_memory_mb: int = 96000  # host memory init-model needs: the base models in bf16, written out (~4x weights)
    description: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def training_settings(self, stage: int) -> dict:
        """Where this variant departs from the published recipe (clip_flant5.recipe.STAGES) in a stage."""
        if stage != 1:
            return {}
        settings = {"template": self.stage1_template}
        if self.stage1_global_batch_size:
            settings["global_batch_size"] = self.stage1_global_batch_size
        return settings


VARIANTS = {
    v.name: v
    for v in (
        Variant("clip-flant5-xxl", "google/flan-t5-xxl", published="zhiqiulin/clip-flant5-xxl",
                published_stage1="zhiqiulin/clip-flant5-xxl-stage-1", published_row="vqascore-clip-flant5-xxl",
                description="the VQAScore model of the paper"),
        Variant("clip-flant5-xl", "google/flan-t5-xl", published="zhiqiulin/clip-flant5-xl",
                published_stage1="zhiqiulin/clip-flant5-xl-stage-1", published_row="vqascore-clip-flant5-xl",
                init_memory_mb=32000, description="FlanT5-XL base, same recipe"),
        Variant("clip-flant5-xxl-no-split-text", "google/flan-t5-xxl", stage1_template="t5_plain",
                description="ablation: stage 1 without split text"),
        Variant("clip-t5-xxl", "t5-11b", stage1_global_batch_size=160,
                description="ablation: the original T5 (t5-11b) instead of FlanT5"),
        Variant("tiny", None, vision=None, init_memory_mb=2000,
                description="random tiny CLIP + T5 for the demo and tests (CPU)"),
    )
}  # fmt: skip


DEFAULT_MODEL = "clip-flant5-xxl"  # what VQAScore scores with when no model is named: the paper's


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise UserError(f"unknown model variant {name!r}; valid: {', '.join(VARIANTS)}") from None


@dataclass(frozen=True)
class ModelSource:
    """Where a model to score comes from: the checkpoint, the tokenizer it scores with, its main-table row."""

    checkpoint: str  # local folder or hub id
    tokenizer: str  # local folder or hub id
    published_row: str | None = None


def resolve_model(name: str, tokenizer: str | None = None) -> ModelSource:
    """A model given by name, hub id or folder.

    A published variant's name (`clip-flant5-xxl`) or its hub id (`zhiqiulin/clip-flant5-xxl`) gives the released
    checkpoint with the base FlanT5 tokenizer the published scorer uses (spec model.md); anything else is taken
    as a checkpoint holding its own tokenizer. `tokenizer` overrides the tokenizer.
    """
    if Path(name).is_dir():  # a local folder wins over a name, as in from_pretrained
        return ModelSource(name, tokenizer or name)
    by_hub_id = {v.published: v for v in VARIANTS.values() if v.published}
    variant = by_hub_id.get(name) or VARIANTS.get(name)
    if variant is not None and variant.published:
        return ModelSource(variant.published, tokenizer or variant.language, variant.published_row)
    if variant is not None:
        raise UserError(f"model {name!r} is a variant with no released checkpoint: train it, or give a checkpoint "
                        f"folder; released: {', '.join(v.name for v in by_hub_id.values())}")  # fmt: skip
    return ModelSource(name, tokenizer or name)
