"""Tests for clip_flant5.validate: missing/corrupt/truncated images, clean output, text-only records."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from clip_flant5.validate import DataValidationError, validate_data

QA = [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]
TEXT_QA = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    (root / "coco").mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "coco" / "good.jpg")
    Image.fromarray(pixels).save(root / "coco" / "good.png")
    jpg = (root / "coco" / "good.jpg").read_bytes()
    (root / "coco" / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (root / "coco" / "corrupt.jpg").write_bytes(b"not an image at all")
    records = [
        {"id": "r0", "image": "coco/good.jpg", "conversations": QA},
        {"id": "r1", "image": "coco/missing.jpg", "conversations": QA},
        {"id": "r2", "conversations": TEXT_QA},
        {"id": "r3", "image": "coco/truncated.jpg", "conversations": QA},
        {"id": "r4", "image": "coco/good.png", "conversations": QA},
        {"id": "r5", "image": "coco/corrupt.jpg", "conversations": QA},
        {"id": "r6", "image": "coco/missing.jpg", "conversations": QA},
        {"id": "r7", "conversations": TEXT_QA, "note": "é"},
        {"id": "r8", "image": ["coco/good.jpg", "coco/good.png"], "conversations": QA},
        {"id": "r9", "image": 5, "conversations": QA},
    ]
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(records, ensure_ascii=False, indent=2), encoding="utf-8")
    return path, root, records


@pytest.mark.parametrize("jobs", [1, 2])
def test_problems_reported_with_records_and_raise(data, tmp_path, jobs):
    path, root, _ = data
    report_path = tmp_path / "report.json"
    with pytest.raises(DataValidationError) as info:
        validate_data(path, root, jobs=jobs, report_path=report_path)
    message = str(info.value)
    assert "1 missing and 2 corrupt image(s)" in message and str(report_path) in message
    assert "coco/missing.jpg (missing)" in message and "coco/truncated.jpg (corrupt" in message
    report = json.loads(report_path.read_text())
    assert report == info.value.report
    assert (report["records"], report["text_only_records"], report["unique_images"]) == (10, 2, 5)
    assert report["missing"] == {
        "count": 1,
        "first": [
            {"path": "coco/missing.jpg", "records": 2, "used_by": [{"index": 1, "id": "r1"}, {"index": 6, "id": "r6"}]}
        ],
    }
    corrupt = {c["path"]: c for c in report["corrupt"]["first"]}
    assert sorted(corrupt) == ["coco/corrupt.jpg", "coco/truncated.jpg"] and report["corrupt"]["count"] == 2
    assert corrupt["coco/truncated.jpg"]["used_by"] == [{"index": 3, "id": "r3"}]
    assert "truncated" in corrupt["coco/truncated.jpg"]["error"]
    assert report["invalid_records"]["count"] == 1 and report["invalid_records"]["first"][0]["id"] == "r9"
    assert report["records_affected"] == 4 and report["records_dropped"] is None


def test_clean_output_keeps_good_and_text_only_records(data, tmp_path):
    path, root, records = data
    clean = tmp_path / "clean.json"
    report = validate_data(path, root, jobs=2, clean_path=clean)
    kept = json.loads(clean.read_text(encoding="utf-8"))
    assert [r["id"] for r in kept] == ["r0", "r2", "r4", "r7", "r8"]
    assert kept == [r for r in records if r["id"] in {"r0", "r2", "r4", "r7", "r8"}]
    assert (report["records_kept"], report["records_dropped"], report["records_affected"]) == (5, 5, 4)
    assert clean.read_text(encoding="utf-8").count("\n") == 5 + 2  # one record per line
    # The clean file validates without problems.
    again = validate_data(clean, root, jobs=1)
    assert again["missing"]["count"] == again["corrupt"]["count"] == again["records_affected"] == 0


def test_open_check_reads_headers_only(data):
    path, root, _ = data
    report = validate_data(path, root, check="open", clean_path=path.with_name("clean.json"))
    # The truncated jpg has a valid header: only a full decode catches it.
    assert [c["path"] for c in report["corrupt"]["first"]] == ["coco/corrupt.jpg"]
    with pytest.raises(ValueError, match="unknown check"):
        validate_data(path, root, check="fast")


def test_text_only_data_needs_no_images(tmp_path):
    path = tmp_path / "text.json"
    path.write_text(json.dumps([{"id": i, "conversations": TEXT_QA} for i in range(3)]))
    report = validate_data(path, tmp_path / "nowhere", jobs=2)
    assert (report["records"], report["text_only_records"], report["unique_images"]) == (3, 3, 0)


def test_strict_mode_with_a_clean_path_raises_and_leaves_no_file(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    records = [
        {"id": "a", "image": "ok.png", "conversations": []},
        {"id": "b", "image": "gone.png", "conversations": []},
    ]
    (tmp_path / "d.json").write_text(json.dumps(records))
    with pytest.raises(DataValidationError, match="gone.png"):
        validate_data(tmp_path / "d.json", tmp_path, jobs=1, clean_path=tmp_path / "clean.json", drop_bad=False)
    assert not (tmp_path / "clean.json").exists()
    report = validate_data(tmp_path / "d.json", tmp_path, jobs=1, clean_path=tmp_path / "clean.json", drop_bad=True)
    assert json.loads((tmp_path / "clean.json").read_text()) == records[:1]
    assert report["missing"]["count"] == 1
