"""Named CLIP-FlanT5 variants (the published model zoo plus the demo's tiny model), queried by name."""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
    description: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def training_settings(self, stage: int) -> dict:
        """Where this variant departs from the published recipe (clip_flant5.train.STAGE_DEFAULTS) in a stage."""
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
                published_stage1="zhiqiulin/clip-flant5-xxl-stage-1", description="the VQAScore model of the paper"),
        Variant("clip-flant5-xl", "google/flan-t5-xl", published="zhiqiulin/clip-flant5-xl",
                published_stage1="zhiqiulin/clip-flant5-xl-stage-1", description="FlanT5-XL base, same recipe"),
        Variant("clip-flant5-xxl-no-split-text", "google/flan-t5-xxl", stage1_template="t5_plain",
                description="ablation: stage 1 without split text"),
        Variant("clip-t5-xxl", "t5-11b", stage1_global_batch_size=160,
                description="ablation: the original T5 (t5-11b) instead of FlanT5"),
        Variant("tiny", None, vision=None, description="random tiny CLIP + T5 for the demo and tests (CPU)"),
    )
}  # fmt: skip


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown model variant {name!r}; valid: {', '.join(VARIANTS)}") from None
