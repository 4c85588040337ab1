"""Image loading and CLIP preprocessing for CLIP-FlanT5.

Reimplements the preprocessing of ``openai/clip-vit-large-patch14-336``
(``transformers.CLIPImageProcessor``) with PIL and numpy only: the HF
processor is slow per image and its API shifts between releases.  The tests
check the output against it to within 1e-6.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .errors import UserError

if TYPE_CHECKING:
    import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# LLaVA pads with the CLIP mean so padding normalises to ~0, not to a colour.
PAD_COLOR = (int(CLIP_MEAN[0] * 255), int(CLIP_MEAN[1] * 255), int(CLIP_MEAN[2] * 255))  # (122, 116, 104)
ASPECT_RATIOS = ("pad", "square")

# float32, as HF builds them, so that normalisation rounds identically.
_MEAN = np.array(CLIP_MEAN, dtype=np.float32)
_STD = np.array(CLIP_STD, dtype=np.float32)


class ImageLoadError(UserError):
    """An image file is missing, corrupt or truncated."""


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` as a fully decoded RGB image."""
    try:
        with Image.open(path) as image:
            # PIL decodes lazily; decode now so a truncated file fails here,
            # naming its path, and not deep inside a training step.
            image.load()
            return image.convert("RGB")
    except Exception as err:  # PIL plugins raise many types for bad data
        raise ImageLoadError(
            f"cannot read image file {os.fspath(path)!r} ({type(err).__name__}: {err}); "
            "the file is missing, corrupt or truncated: re-download it or run "
            "the data validation step"
        ) from err


def expand_to_square(image: Image.Image, fill: tuple[int, int, int] = PAD_COLOR) -> Image.Image:
    """Centre an RGB ``image`` on a square canvas, as LLaVA's ``expand2square``."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def clip_preprocess(image: Image.Image, size: int) -> torch.Tensor:
    """CLIP preprocessing of an RGB image to a float32 ``[3, size, size]`` tensor."""
    if image.mode != "RGB":  # HF converts before resizing; order matters
        image = image.convert("RGB")
    width, height = image.size
    # HF truncates (int(), not round) the long side, with this exact
    # evaluation order; and it resizes even when the short side already fits.
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)
    image = image.resize(new_size, resample=Image.Resampling.BICUBIC)

    # Centre-crop offsets floor towards the top-left, as in HF.
    width, height = new_size
    left, top = (width - size) // 2, (height - size) // 2
    array = np.asarray(image)[top : top + size, left : left + size]

    # HF rescales in float64, casts to float32, then normalises in float32;
    # doing the same keeps the result bit-identical.
    array = (array.astype(np.float64) * (1 / 255)).astype(np.float32)
    array = (array - _MEAN) / _STD
    import torch  # here: the workflow reads this module's facts (ASPECT_RATIOS) at parse time, without torch

    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def preprocess_image(image: Image.Image, size: int, aspect_ratio: str = "pad") -> torch.Tensor:
    """Pad (or not) to a square, then apply CLIP preprocessing."""
    if aspect_ratio == "pad":
        image = expand_to_square(image)
    elif aspect_ratio != "square":
        raise UserError(f"unknown image_aspect_ratio {aspect_ratio!r}; valid values: {', '.join(ASPECT_RATIOS)}")
    return clip_preprocess(image, size)


def load_and_preprocess(path: str | os.PathLike, size: int, aspect_ratio: str = "pad") -> torch.Tensor:
    return preprocess_image(load_image(path), size, aspect_ratio)


def dummy_image(size: int) -> torch.Tensor:
    """All-zero image tensor standing in for the image of a text-only sample."""
    import torch

    return torch.zeros(3, size, size, dtype=torch.float32)
