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
    to_rgb,
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
    # Both sides get the package's RGB image (to_rgb): HF clips 16-bit values, as convert("RGB") does.
    rgb = to_rgb(image)
    hf_input = image if mode in ("L", "RGBA", "CMYK") else rgb  # where HF converts as we do (alpha onto white)
    assert_close(clip_preprocess(image, size), hf_pixels(hf_input, size), size)
    assert_close(preprocess_image(rgb, size, "pad"), hf_pixels(expand_to_square(rgb), size), size)


@pytest.mark.parametrize("size", CROP_SIZES)
@pytest.mark.parametrize(("suffix", "mode"), [(".png", "RGB"), (".png", "RGBA"), (".jpg", "RGB"), (".gif", "P")])
def test_file_round_trip_matches_hf(tmp_path, suffix, mode, size):
    path = tmp_path / f"image{suffix}"
    noise_image(123, 77, mode).save(path)
    with Image.open(path) as raw:
        expected_rgb = np.asarray(on_white(raw) if raw.mode == "RGBA" else raw.convert("RGB"))
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


def assert_load_error(path, says: str = "re-download") -> None:
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    message = str(info.value)
    assert str(path) in message
    assert says in message
    with pytest.raises(ImageLoadError):
        load_and_preprocess(path, 32)


def test_load_missing_file(tmp_path):
    assert_load_error(tmp_path / "missing.jpg", "not found")
    with pytest.raises(ImageLoadError, match="the folder '.*nowhere' does not exist either .is the image root right"):
        load_image(tmp_path / "nowhere" / "a.jpg")
    assert_load_error(tmp_path, "is a folder")


def test_a_permission_error_says_so_not_re_download(tmp_path, monkeypatch):
    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(ImageLoadError, match="cannot be read .permission denied.: fix its permissions") as info:
        load_image(tmp_path / "secret.png")
    assert "re-download" not in str(info.value)


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


def on_white(image: Image.Image) -> Image.Image:
    """Alpha composited onto white, computed apart from PIL's paste (rounded blend)."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
    alpha = rgba[..., 3:] / 255
    return Image.fromarray(np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8), "RGB")


def test_sixteen_bit_grey_is_scaled_not_clipped_to_white(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as raw:
        assert raw.mode.startswith("I") and raw.convert("RGB").getpixel((2, 0)) == (255, 255, 255)  # PIL clips
    assert [load_image(tmp_path / "grey16.png").getpixel((x, 0))[0] for x in range(4)] == [0, 1, 128, 255]
    eight_bit_in_i_mode = Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32), "I")
    assert [to_rgb(eight_bit_in_i_mode).getpixel((x, 0))[0] for x in range(3)] == [0, 100, 255]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    shown = load_image(tmp_path / "rotated.jpg")
    assert shown.size == (20, 40)  # portrait, as a viewer shows it
    top = shown.getpixel((10, 2))
    assert top[2] > 200 and top[0] < 60  # the stored left edge is now at the top


def test_transparency_is_composited_onto_white(tmp_path):
    rgba = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 0, 255))
    rgba.putpixel((2, 0), (200, 0, 0, 128))
    rgba.save(tmp_path / "alpha.png")
    assert [load_image(tmp_path / "alpha.png").getpixel((x, 0)) for x in range(3)] == [
        (255, 255, 255), (0, 0, 0), (227, 127, 127)]  # fmt: skip
    palette = rgba.convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))
    palette.save(tmp_path / "palette.png", transparency=palette.getpixel((0, 0)))
    assert load_image(tmp_path / "palette.png").getpixel((0, 0)) == (255, 255, 255)
    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (50, 255))
    assert [to_rgb(la).getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (50, 50, 50)]


def test_cmyk_is_converted_to_rgb(tmp_path):
    Image.new("CMYK", (3, 3), (255, 0, 0, 0)).save(tmp_path / "cyan.jpg", quality=100)
    red, green, blue = load_image(tmp_path / "cyan.jpg").getpixel((1, 1))
    assert red < 10 and green > 245 and blue > 245


def test_an_image_over_the_pixel_limit_names_its_size_and_the_setting(tmp_path, monkeypatch):
    Image.new("RGB", (30, 20)).save(tmp_path / "big.png")
    monkeypatch.setenv("CLIP_FLANT5_MAX_IMAGE_PIXELS", "500")
    with pytest.raises(
        ImageLoadError, match=r"is 30x20 = 600 pixels, over the limit of 500 .* CLIP_FLANT5_MAX_IMAGE_PIXELS=600"
    ):
        load_image(tmp_path / "big.png")
    monkeypatch.setenv("CLIP_FLANT5_MAX_IMAGE_PIXELS", "600")
    assert load_image(tmp_path / "big.png").size == (30, 20)
    monkeypatch.setenv("CLIP_FLANT5_MAX_IMAGE_PIXELS", "many")
    with pytest.raises(ValueError, match="CLIP_FLANT5_MAX_IMAGE_PIXELS='many': expected a positive number"):
        load_image(tmp_path / "big.png")
    monkeypatch.delenv("CLIP_FLANT5_MAX_IMAGE_PIXELS")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL's own guard (2x: 200 pixels) fires first
    with pytest.raises(ImageLoadError, match="is too large .* CLIP_FLANT5_MAX_IMAGE_PIXELS=600") as info:
        load_image(tmp_path / "big.png")
    assert "corrupt" not in str(info.value)
