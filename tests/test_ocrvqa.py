"""Tests for clip_flant5.ocrvqa: which files are converted, idempotence, failures, parallel == serial."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from clip_flant5.ocrvqa import OcrVqaFixError, fix_ocrvqa


def make_image(path, fmt: str, seed: int, size=(37, 23)) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if fmt == "GIF":
        image = image.convert("P")  # palette, as real GIFs: the fix must convert to RGB
    image.save(path, format=fmt)


def upstream_jpg(path) -> bytes:
    """What upstream's fix_ocrvqa.py writes: Image.open(...).convert('RGB').save(...) as JPEG."""
    out = io.BytesIO()
    Image.open(path).convert("RGB").save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    make_image(folder / "a.gif", "GIF", 0)
    make_image(folder / "b.png", "PNG", 1, size=(64, 48))
    make_image(folder / "c.PNG", "PNG", 2)
    make_image(folder / "d.GIF", "GIF", 3)
    make_image(folder / "e.png", "PNG", 4)
    make_image(folder / "e.jpg", "JPEG", 5)  # already fixed: must stay untouched
    make_image(folder / "f.jpg", "JPEG", 6)
    (folder / "notes.txt").write_text("not an image")
    Image.new("RGBA", (5, 5), (255, 0, 0, 128)).save(folder / "g.png")
    return folder


@pytest.mark.parametrize("jobs", [1, 2])
def test_converts_missing_jpgs_once(folder, jobs):
    originals = {p.name: p.read_bytes() for p in folder.iterdir()}
    summary = fix_ocrvqa(folder, jobs=jobs)
    assert summary["converted"] == 5 and summary["already_present"] == 1 and summary["failed"] == 0
    for stem, source in [("a", "a.gif"), ("b", "b.png"), ("c", "c.PNG"), ("d", "d.GIF"), ("g", "g.png")]:
        jpg = folder / f"{stem}.jpg"
        with Image.open(jpg) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert image.size == Image.open(folder / source).size
        assert jpg.read_bytes() == upstream_jpg(folder / source)
    for name, data in originals.items():  # originals kept, existing jpgs untouched
        assert (folder / name).read_bytes() == data
    assert not list(folder.glob(".*"))  # no temp files left

    again = fix_ocrvqa(folder, jobs=jobs)
    assert again["converted"] == 0 and again["already_present"] == 6 and again["failed"] == 0


def test_parallel_output_equals_serial(folder, tmp_path):
    for i in range(40):
        make_image(folder / f"x{i}.{'gif' if i % 2 else 'png'}", "GIF" if i % 2 else "PNG", 100 + i, (20 + i, 30))
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert fix_ocrvqa(folder, jobs=1)["converted"] == fix_ocrvqa(copy, jobs=2)["converted"] == 45
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(p.name for p in copy.iterdir())
    assert all((folder / name).read_bytes() == (copy / name).read_bytes() for name in names)


def test_same_stem_converted_once(tmp_path):
    make_image(tmp_path / "x.gif", "GIF", 0)
    make_image(tmp_path / "x.png", "PNG", 1)
    summary = fix_ocrvqa(tmp_path, jobs=2)
    assert (summary["converted"], summary["same_stem_skipped"]) == (1, 1)
    assert (tmp_path / "x.jpg").read_bytes() == upstream_jpg(tmp_path / "x.gif")


@pytest.mark.parametrize("jobs", [1, 2])
def test_corrupt_file_named_and_fails(folder, jobs):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    data = (folder / "b.png").read_bytes()
    (folder / "truncated.gif").write_bytes(data[: len(data) // 2])  # a png cut in half, named .gif
    with pytest.raises(OcrVqaFixError) as info:
        fix_ocrvqa(folder, jobs=jobs)
    assert "2 image(s) failed" in str(info.value)
    assert "broken.png" in str(info.value) and "truncated.gif" in str(info.value)
    assert info.value.summary["converted"] == 5  # the good ones are converted anyway
    assert not (folder / "broken.jpg").exists() and not (folder / "truncated.jpg").exists()
    assert not list(folder.glob(".*"))


def test_keep_going_counts_failures(folder):
    (folder / "broken.GIF").write_bytes(b"GIF89a nonsense")
    summary = fix_ocrvqa(folder, jobs=2, keep_going=True)
    assert summary["converted"] == 5 and summary["failed"] == 1
    assert [f["file"] for f in summary["failed_files"]] == ["broken.GIF"] and summary["failed_files"][0]["error"]
    # A rerun retries only the failure.
    assert fix_ocrvqa(folder, keep_going=True)["converted"] == 0
