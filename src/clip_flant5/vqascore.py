"""VQAScore from Python: a model by name, images (paths or PIL images) x texts in, a score matrix out.

    from clip_flant5 import VQAScore

    scorer = VQAScore("clip-flant5-xxl", device="cuda")         # the released model, its base tokenizer
    scorer(images=["a.jpg", "b.jpg"], texts=["a cat", "a dog"])  # tensor [2 images x 2 texts]
    scorer(images=["a.jpg", "b.jpg"], texts=["a cat", "a dog"], pairs=True)  # one image per text: tensor [2]
    scorer(images, texts, question_template='Is "{}" shown?', score="first-token")

As `t2v_metrics.VQAScore(model=...)(images=..., texts=...)`, with the same default prompt and formula; each image is
loaded and CLIP-encoded once however many texts it is scored with, and pairs are batched (`clip_flant5.score`).
`ScoreSettings` (how a score is computed) lives here, free of torch, so that the workflow reads its fields at parse
time; the engine is imported when a scorer is built.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import UserError
from .prompts import DEFAULT_ANSWER_TEMPLATE, DEFAULT_PROMPT_STYLE, DEFAULT_QUESTION_TEMPLATE, PROMPT_STYLES
from .settings import check, from_dict, setting

if TYPE_CHECKING:
    import torch

SCORE_KINDS = ("exp-mean-ce", "first-token")
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class ScoreSettings:
    """How VQAScore is computed; the defaults are the published scorer's."""

    question_template: str = setting(DEFAULT_QUESTION_TEMPLATE, "question asked of each text ({} = the text)")
    answer_template: str = setting(DEFAULT_ANSWER_TEMPLATE, "answer whose likelihood is the score")
    prompt_style: str = setting(DEFAULT_PROMPT_STYLE, "prompt around the question", choices=PROMPT_STYLES)
    score: str = setting("exp-mean-ce", "exp-mean-ce: the published VQAScore (exp of minus the mean cross-entropy "
                         "of the answer tokens); first-token: P(first answer token)", choices=SCORE_KINDS)  # fmt: skip
    batch_size: int = setting(16, "pairs per encoder pass", minimum=1)
    images_per_chunk: int = setting(64, "images per unit of work saved as it finishes (resumption)", minimum=1)
    full_vocab: bool = setting(False, "softmax over all embedding rows, not the tokenizer's (not published)")
    workers: int = setting(4, "threads loading and preprocessing images", minimum=1)

    def __post_init__(self):
        check(self, "scoring setting")
        if "{}" not in self.question_template:
            raise UserError(f"scoring setting question_template must contain {{}} (where the text goes), "
                            f"got {self.question_template!r}")  # fmt: skip


def torch_dtype(name: str):
    """fp32 / bf16 / fp16 as a torch dtype."""
    import torch

    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}; valid: {', '.join(DTYPES)}")
    return getattr(torch, DTYPES[name])


class VQAScore:
    """A CLIP-FlanT5 model and tokenizer loaded once, scoring images x texts.

    `model`: a released model's name (`clip-flant5-xxl`, the default, or `clip-flant5-xl`: the checkpoint with the
    base FlanT5 tokenizer it was published with), its hub id, or a checkpoint folder. `device`: default cuda when
    available; `dtype`: default bf16 on a GPU, fp32 on the CPU. Keyword settings (`batch_size`, `question_template`,
    ...) are `ScoreSettings` fields; a call may override the templates, the prompt style and the score kind.
    """

    def __init__(self, model: str | None = None, *, device: str | None = None, dtype: str | None = None,
                 tokenizer: str | None = None, vision_tower: str | None = None, **settings):  # fmt: skip
        import torch

        from .checkpoint import load_model
        from .inference import load_tokenizer
        from .variants import DEFAULT_MODEL, resolve_model

        self.settings = from_dict(ScoreSettings, settings, "scoring settings")
        self.source = resolve_model(str(model or DEFAULT_MODEL), tokenizer)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = dtype or ("bf16" if str(self.device).startswith("cuda") else "fp32")
        self.model = load_model(self.source.checkpoint, dtype=torch_dtype(self.dtype), device=self.device,
                                vision_tower=vision_tower)  # fmt: skip
        self.tokenizer = load_tokenizer(self.source.tokenizer)
        self._engines: dict[ScoreSettings, object] = {}

    def engine(self, **overrides):
        """The batched scorer (`clip_flant5.score.VQAScorer`) for these settings, made once per settings."""
        from .score import VQAScorer

        settings = dataclasses.replace(self.settings, **overrides) if overrides else self.settings
        if settings not in self._engines:
            self._engines[settings] = VQAScorer(self.model, self.tokenizer, settings)
        return self._engines[settings]

    def __call__(self, images, texts, *, pairs: bool = False, question_template: str | None = None,
                 answer_template: str | None = None, prompt_style: str | None = None,
                 score: str | None = None) -> torch.Tensor:  # fmt: skip
        """Scores in [0, 1]: a [len(images) x len(texts)] tensor, or with `pairs=True` one score per
        (images[k], texts[k]) as a [len(texts)] tensor. Images: paths or PIL images; a lone image or text is a
        list of one."""
        import torch

        overrides = {"question_template": question_template, "answer_template": answer_template,
                     "prompt_style": prompt_style, "score": score}  # fmt: skip
        engine = self.engine(**{k: v for k, v in overrides.items() if v is not None})
        images = [images] if _is_image(images) else list(images)
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not images or not texts:
            raise UserError(f"VQAScore needs at least one image and one text, got {len(images)} and {len(texts)}")
        bad = [t for t in texts if not isinstance(t, str) or not t.strip()]
        if bad:
            raise UserError(f"VQAScore: texts must be non-empty strings, got {bad[0]!r}")
        if pairs and len(images) != len(texts):
            raise UserError(f"VQAScore(pairs=True) takes one image per text: got {len(images)} images and "
                            f"{len(texts)} texts")  # fmt: skip
        distinct: dict[object, int] = {}  # a path once, however often it is given; a PIL image by identity
        index = [distinct.setdefault(_image_key(image), len(distinct)) for image in images]
        image_of = dict(zip(index, images, strict=True))  # any of the equal ones
        wanted = list(zip(index, texts, strict=True)) if pairs else [(i, text) for i in index for text in texts]
        scores = engine.score_images([image_of[i] for i in range(len(distinct))], wanted)
        result = torch.tensor(scores, dtype=torch.float32)
        return result if pairs else result.view(len(images), len(texts))


def _is_image(value) -> bool:
    from PIL import Image

    return isinstance(value, str | os.PathLike | Image.Image)


def _image_key(image):
    from PIL import Image

    if isinstance(image, Image.Image):
        return ("pil", id(image))
    if not isinstance(image, str | os.PathLike):
        raise UserError(f"VQAScore: an image is a path or a PIL image, got {type(image).__name__}")
    return ("path", os.fspath(image))
