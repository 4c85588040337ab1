"""Tests for clip_flant5.images: equality with the HF CLIP processor, padding, load errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from clip_flant5.images import (
    ASPECT_RATIOS,
    CLIP_MEAN,
    CLIP_STD,
    PAD_COLOR,
    ImageLoadError,
    clip_preprocess,
    dummy_image,
    expand_to_square,
    load_and_preprocess,
    load_image,
    preprocess_image,
)

TOL = 1e-6
CROP_SIZES = (336, 32)
# (width, height): degenerate, extreme strips both ways, odd and even, already square.
IMAGE_SIZES = [
    (1, 1),
    (7, 300),
    (300, 7),
    (333, 500),
    (500, 333),
    (640, 480),
    (336, 336),
    (337, 211),
    (31, 33),
]
_PROCESSORS: dict[int, CLIPImageProcessorPil] = {}


def hf_processor(size: int) -> CLIPImageProcessorPil:
    """The processor as configured for openai/clip-vit-large-patch14-336, with crop size `size`."""
    if size not in _PROCESSORS:
        _PROCESSORS[size] = CLIPImageProcessorPil(
            size={"shortest_edge": size},
            crop_size={"height": size, "width": size},
            do_resize=True,
            do_center_crop=True,
            do_convert_rgb=True,
            resample=3,
            do_rescale=True,
            rescale_factor=1 / 255,
            do_normalize=True,
            image_mean=list(CLIP_MEAN),
            image_std=list(CLIP_STD),
        )
    return _PROCESSORS[size]


def hf_pixels(image: Image.Image, size: int) -> torch.Tensor:
    return hf_processor(size)(images=image, return_tensors="pt")["pixel_values"][0]


def noise_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Random pixels (the hardest case for bicubic overshoot and clipping) in `mode`."""
    rng = np.random.default_rng(seed + 7919 * width + height)
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    if mode == "RGBA":
        alpha = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), "L")
        rgba = rgb.convert("RGBA")
        rgba.putalpha(alpha)
        return rgba
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    return rgb.convert(mode)


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, size: int) -> None:
    assert ours.dtype == torch.float32
    assert tuple(ours.shape) == (3, size, size)
    assert tuple(theirs.shape) == (3, size, size)
    diff = (ours - theirs.float()).abs().max().item()
    assert diff <= TOL, f"max abs diff {diff}"


@pytest.mark.parametrize("size", CROP_SIZES)
@pytest.mark.parametrize(("width", "height"), IMAGE_SIZES)
def test_square_matches_hf(width, height, size):
    image = noise_image(width, height)
    assert_close(preprocess_image(image, size, "square"), hf_pixels(image, size), size)


@pytest.mark.parametrize("size", CROP_SIZES)
@pytest.mark.parametrize(("width", "height"), IMAGE_SIZES)
def test_pad_matches_hf_on_expanded_image(width, height, size):
    image = noise_image(width, height)
    ours = preprocess_image(image, size, "pad")
    assert_close(ours, hf_pixels(expand_to_square(image), size), size)


@pytest.mark.parametrize("size", CROP_SIZES)
@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_other_modes_match_hf(mode, size):
    image = noise_image(45, 29, mode)
    assert image.mode == mode
    # HF composites alpha onto white; the project's rule is a plain convert("RGB"),
    # so both sides get the converted image (identical for modes without alpha).
    rgb = image.convert("RGB")
    hf_input = rgb if "A" in image.getbands() else image
    assert_close(clip_preprocess(image, size), hf_pixels(hf_input, size), size)
    assert_close(preprocess_image(rgb, size, "pad"), hf_pixels(expand_to_square(rgb), size), size)


@pytest.mark.parametrize("size", CROP_SIZES)
@pytest.mark.parametrize(("suffix", "mode"), [(".png", "RGB"), (".png", "RGBA"), (".jpg", "RGB"), (".gif", "P")])
def test_file_round_trip_matches_hf(tmp_path, suffix, mode, size):
    path = tmp_path / f"image{suffix}"
    noise_image(123, 77, mode).save(path)
    with Image.open(path) as raw:
        expected_rgb = np.asarray(raw.convert("RGB"))
    image = load_image(path)
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), expected_rgb)
    for aspect_ratio in ASPECT_RATIOS:
        hf_input = expand_to_square(image) if aspect_ratio == "pad" else image
        assert_close(load_and_preprocess(path, size, aspect_ratio), hf_pixels(hf_input, size), size)
    assert_close(load_and_preprocess(str(path), size), hf_pixels(expand_to_square(image), size), size)


def test_constants():
    assert PAD_COLOR == (122, 116, 104)
    assert ASPECT_RATIOS == ("pad", "square")
    assert issubclass(ImageLoadError, ValueError)


@pytest.mark.parametrize(("width", "height"), [(40, 10), (41, 10), (10, 40), (10, 41), (3, 8)])
def test_expand_to_square_centres_on_mean_colour(width, height):
    image = noise_image(width, height)
    square = expand_to_square(image)
    side = max(width, height)
    assert square.size == (side, side)
    assert square.mode == "RGB"
    left, top = (0, (width - height) // 2) if width > height else ((height - width) // 2, 0)
    pixels = np.asarray(square)
    np.testing.assert_array_equal(pixels[top : top + height, left : left + width], np.asarray(image))
    padded = np.ones((side, side), dtype=bool)
    padded[top : top + height, left : left + width] = False
    assert padded.sum() == side * side - width * height
    assert (pixels[padded] == PAD_COLOR).all()


def test_expand_to_square_leaves_square_images_unchanged():
    image = noise_image(9, 9)
    np.testing.assert_array_equal(np.asarray(expand_to_square(image)), np.asarray(image))


def test_dummy_image():
    image = dummy_image(32)
    assert image.dtype == torch.float32
    assert tuple(image.shape) == (3, 32, 32)
    assert not image.any()


def test_unknown_aspect_ratio_lists_valid_ones():
    with pytest.raises(ValueError, match="anyres") as info:
        preprocess_image(noise_image(8, 8), 32, "anyres")
    for name in ASPECT_RATIOS:
        assert name in str(info.value)


def assert_load_error(path) -> None:
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    message = str(info.value)
    assert str(path) in message
    assert "re-download" in message
    with pytest.raises(ImageLoadError):
        load_and_preprocess(path, 32)


def test_load_missing_file(tmp_path):
    assert_load_error(tmp_path / "missing.jpg")


def test_load_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert_load_error(path)


def test_load_random_bytes(tmp_path):
    path = tmp_path / "garbage.jpg"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_load_error(path)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_load_truncated_file(tmp_path, fmt):
    path = tmp_path / f"truncated.{fmt.lower()}"
    noise_image(128, 96).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    # The header survives, so a lazy open succeeds: only full decoding catches this.
    with Image.open(path) as lazy:
        assert lazy.size == (128, 96)
    assert_load_error(path)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
