"""Image loading and CLIP preprocessing for CLIP-FlanT5.

Reimplements the preprocessing of ``openai/clip-vit-large-patch14-336``
(``transformers.CLIPImageProcessor``) with PIL and numpy only: the HF
processor is slow per image and its API shifts between releases.  The tests
check the output against it to within 1e-6.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

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
    """An image file is missing, unreadable, corrupt, truncated or too large; the message says which."""


PIXEL_LIMIT_VARIABLE = "CLIP_FLANT5_MAX_IMAGE_PIXELS"
DEFAULT_PIXEL_LIMIT = 2 * Image.MAX_IMAGE_PIXELS  # where PIL itself refuses a file (decompression-bomb guard)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
ORIENTATION_TAG = 0x0112  # EXIF: how the stored pixels must be turned to be shown


def pixel_limit() -> int:
    """The largest image (width x height) loaded: CLIP_FLANT5_MAX_IMAGE_PIXELS, else PIL's own refusal limit."""
    value = os.environ.get(PIXEL_LIMIT_VARIABLE)
    if not value:
        return DEFAULT_PIXEL_LIMIT
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{PIXEL_LIMIT_VARIABLE}={value!r}: expected a positive number of pixels")
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, int(value))  # PIL's guard never fires before ours
    return int(value)


def _too_large(path, width: int, height: int, limit: int) -> ImageLoadError:
    return ImageLoadError(
        f"image file {os.fspath(path)!r} is {width}x{height} = {width * height:,} pixels, over the limit of "
        f"{limit:,} (a guard against decompression bombs): if the file is trusted, allow it with "
        f"{PIXEL_LIMIT_VARIABLE}={width * height}, or downscale it"
    )


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` as a fully decoded RGB image (`to_rgb`), or raise ImageLoadError saying what is wrong."""
    return to_rgb(open_image(path))


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` fully decoded, in the file's own mode, or raise ImageLoadError saying what is wrong."""
    name, limit = os.fspath(path), pixel_limit()
    try:
        with Image.open(path) as image:
            if image.width * image.height > limit:
                raise _too_large(path, image.width, image.height, limit)
            # PIL decodes lazily; decode now so a truncated file fails here,
            # naming its path, and not deep inside a training step.
            image.load()
            return image  # loaded: usable once the file is closed
    except ImageLoadError:
        raise
    except FileNotFoundError:
        folder = os.path.dirname(name) or "."
        where = (
            "" if os.path.isdir(folder) else f"; the folder {folder!r} does not exist either (is the image root right?)"
        )
        raise ImageLoadError(f"image file {name!r} not found{where}") from None
    except PermissionError:
        raise ImageLoadError(f"image file {name!r} cannot be read (permission denied): fix its permissions") from None
    except IsADirectoryError:
        raise ImageLoadError(f"image path {name!r} is a folder, not an image file") from None
    except Image.DecompressionBombError as err:  # PIL's own guard, at the same limit, fired first
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        raise ImageLoadError(
            f"image file {name!r} is too large ({err}): if the file is trusted, allow it with "
            f"{PIXEL_LIMIT_VARIABLE}={pixels[1] if pixels else '<pixels>'}, or downscale it"
        ) from None
    except Exception as err:  # PIL plugins raise many types for bad data
        raise ImageLoadError(
            f"cannot decode image file {name!r} ({type(err).__name__}: {err}): the file is corrupt, truncated or "
            "not an image: re-download it, or drop the records that use it (validate-data --drop-bad)"
        ) from err


def to_rgb(image: Image.Image) -> Image.Image:
    """The image as a viewer shows it, in 8-bit RGB: the EXIF orientation applied, 16-bit grey scaled to 8 bits
    (not clipped), palettes with transparency and alpha composited onto white (as transformers' CLIP processor
    does), CMYK as PIL converts it. The published scorer's plain `convert("RGB")` ignores the orientation, clips
    16-bit values to white and drops alpha (see docs/images.md)."""
    if image.getexif().get(ORIENTATION_TAG, 1) != 1:  # exif_transpose copies even an upright image
        image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode in SIXTEEN_BIT_MODES or values.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.rint(values.clip(0, peak) * (255.0 / peak)).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        canvas = Image.new("RGB", image.size, (255, 255, 255))
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    return image if image.mode == "RGB" else image.convert("RGB")


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
        image = to_rgb(image)
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
    """`to_rgb`, pad (or not) to a square, then apply CLIP preprocessing."""
    if image.mode != "RGB":  # before padding: the canvas takes the image's mode
        image = to_rgb(image)
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
