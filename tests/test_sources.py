"""The data manifest (src/clip_flant5/sources.yaml, package data) and the lock file: validation, the layout contract,
atomic updates."""

import json
import re
import threading
import tomllib
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

import clip_flant5
from clip_flant5 import sources as sources_module
from clip_flant5.errors import UserError
from clip_flant5.sources import (
    DEFAULT_LOCK,
    DEFAULT_SOURCES,
    MANIFEST_SCHEMA,
    LockEntry,
    LockError,
    ManifestError,
    SourceError,
    UnknownSourceError,
    get_source,
    load_sources,
    read_lock,
    update_lock,
)

REPO = Path(__file__).resolve().parents[1]

TRAIN = {"llava_pretrain", "llava_mix665k", "llava_mix665k_flattened", "coco_train2017", "gqa", "ocr_vqa", "textvqa",
         "vg"}  # fmt: skip
BENCHMARKS = {"winoground", "eqben", "tifa160", "pickapic", "seetrue", "genai_bench_527", "genai_bench_1600"}
T2V_METRICS = "https://raw.githubusercontent.com/linzhiqiu/t2v_metrics/{}/datasets/{}"


@pytest.fixture(scope="module")
def sources():
    return load_sources(DEFAULT_SOURCES)


def test_the_manifest_is_package_data_and_the_locks_the_checkouts():
    package = Path(clip_flant5.__file__).parent
    assert DEFAULT_SOURCES == package / "sources.yaml" and DEFAULT_SOURCES.is_file()
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(DEFAULT_SOURCES.relative_to(package).match(glob) for glob in package_data["clip_flant5"])  # in a wheel
    assert DEFAULT_LOCK == Path("config/sources.lock.json") and not DEFAULT_LOCK.is_absolute()
    assert not hasattr(sources_module, "REPO_ROOT")
    Draft202012Validator.check_schema(MANIFEST_SCHEMA)


def test_manifest_has_every_source_of_the_spec(sources):
    assert {n for n, s in sources.items() if s.group == "train"} == TRAIN
    assert {n for n, s in sources.items() if s.group == "benchmark"} == BENCHMARKS


def test_manifest_urls_and_ids_are_the_specs(sources):
    files = {(s.name, f.name): f for s in sources.values() for f in s.files}
    hf = {k: (f.repo, f.repo_type, f.filename) for k, f in files.items() if f.kind == "huggingface"}
    assert hf[("llava_pretrain", "blip_laion_cc_sbu_558k.json")][:2] == ("liuhaotian/LLaVA-Pretrain", "dataset")
    assert hf[("llava_pretrain", "images.zip")] == ("liuhaotian/LLaVA-Pretrain", "dataset", "images.zip")
    assert hf[("llava_mix665k", "llava_v1_5_mix665k.json")][0] == "liuhaotian/LLaVA-Instruct-150K"
    flat = "llava_v1_5_mix665k_flattened_multi_turn.json"
    assert hf[("llava_mix665k_flattened", flat)] == ("zhiqiulin/CLIP-FlanT5", "dataset", flat)
    assert hf[("pickapic", "pickapic_v1.zip")][0] == "zhiqiulin/vqascore_ablation"
    assert hf[("seetrue", "images.zip")][0] == "yonatanbitton/SeeTRUE"
    genai = {f.name for s, f in [(k[0], v) for k, v in files.items()] if s == "genai_bench_527"}
    models = ("DALLE_3", "SDXL_Turbo", "DeepFloyd_I_XL_v1", "Midjourney_6", "SDXL_2_1", "SDXL_Base")
    assert genai == {"genai_image.json", "genai_skills.json", *(m + ".zip" for m in models)}
    assert all(files[("genai_bench_527", m + ".zip")].repo == "zhiqiulin/GenAI-Bench-527" for m in models)
    gdrive = {k[0]: f.id for k, f in files.items() if f.kind == "gdrive" and f.id}
    assert gdrive == {"winoground": "1Lril_90vjsbL_2qOaxMu3I-aPpckCDiF", "eqben": "11YUTf06uzRHtFV8rYi96z4vTPi8_GNEM",
                      "tifa160": "1hHVMeVDZlnJz1FFhy_BxiZGIz1tEMm0s"}  # fmt: skip
    https = {k: f.url for k, f in files.items() if f.kind == "https"}
    assert https[("coco_train2017", "train2017.zip")] == "http://images.cocodataset.org/zips/train2017.zip"
    assert https[("gqa", "images.zip")] == "https://downloads.cs.stanford.edu/nlp/data/gqa/images.zip"
    assert https[("textvqa", "train_val_images.zip")] == "https://dl.fbaipublicfiles.com/textvqa/images/" + (
        "train_val_images.zip"
    )
    assert https[("vg", "images.zip")] == "https://cs.stanford.edu/people/rak248/VG_100K_2/images.zip"
    assert https[("vg", "images2.zip")] == "https://cs.stanford.edu/people/rak248/VG_100K_2/images2.zip"
    pinned = "1c7c763e6a87e1df001ec90c8ef62960a3fa407d"
    assert https[("tifa160", "tifa160.json")] == T2V_METRICS.format(pinned, "tifa160.json")
    assert https[("tifa160", "dsg_tifa160_anns.csv")] == T2V_METRICS.format(pinned, "dsg_tifa160_anns.csv")
    seetrue = "60ce07b144b9bff24b8dac5317cb28586b1b2509"
    assert https[("seetrue", "SeeTRUE.csv")] == T2V_METRICS.format(seetrue, "SeeTRUE.csv")


def test_manifest_layout_contract(sources, tmp_path):
    """Where the training JSONs' image paths and the benchmark loaders expect the data."""
    provided = {p for s in sources.values() if s.group == "train" for p in s.provided_paths(tmp_path)}
    train = tmp_path / "train"
    # ocr_vqa/images/ is no source's: its images are downloaded from the URLs in ocr_vqa/dataset.json
    for rel in ("coco/train2017", "gqa/images", "ocr_vqa/dataset.json", "textvqa/train_images", "vg/VG_100K",
                "vg/VG_100K_2", "LLaVA-Pretrain/blip_laion_cc_sbu_558k.json", "LLaVA-Pretrain/images",
                "llava_v1_5_mix665k.json"):  # fmt: skip
        assert any(p == train / rel or train / rel in p.parents for p in provided), rel
    for name in BENCHMARKS:
        s = sources[name]
        assert s.root(tmp_path) == tmp_path / "benchmarks" / name
        assert s.download_dir(tmp_path) == tmp_path / "downloads" / name
    archives = [f for s in sources.values() for f in s.files if f.unpack]
    assert archives and all(f.unpack == "zip" for f in archives)


def test_no_source_is_manual_and_ocr_vqa_comes_from_its_drive_folder(sources):
    """Every source downloads without a person (the manual mechanism itself is tested in test_download.py)."""
    assert [n for n, s in sources.items() if s.kind == "manual"] == []
    ocr = sources["ocr_vqa"]
    [f] = ocr.files
    assert (f.kind, f.id, f.folder, f.filename) == ("gdrive", None, "1_GYPY5UkUy7HIcR0zq3ZCFgeZN7BAfm_", "dataset.json")
    assert f.dest == "ocr_vqa/dataset.json" and ocr.provides == ("ocr_vqa/dataset.json",)
    assert f.remote == "https://drive.google.com/drive/folders/1_GYPY5UkUy7HIcR0zq3ZCFgeZN7BAfm_"
    assert "clip-flant5 fix-ocrvqa" in ocr.note


def test_unknown_source_lists_the_valid_names(sources):
    with pytest.raises(UnknownSourceError, match=r"unknown data source 'cocoa'; valid: llava_pretrain, .*winoground"):
        get_source(sources, "cocoa")


GOOD = """
sources:
  a:
    group: train
    kind: https
    files:
      - {name: a.zip, url: "https://x/a.zip", unpack: zip, dest: a}
    provides: [a]
"""


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("group: train", "group: training", r"source 'a': field 'group' must be one of"),
        ("kind: https", "kind: ftp", r"source 'a': field 'kind' must be one of"),
        ('url: "https://x/a.zip", ', "", r"source 'a': files\[0\] \(a.zip\): a https file needs the field 'url'"),
        ("kind: https", "kind: gdrive", r"files\[0\] \(a.zip\): a gdrive file needs the field 'id' .* or 'folder'"),
        ("kind: https", "kind: huggingface", r"files\[0\] \(a.zip\): a huggingface file needs the field 'repo'"),
        ("unpack: zip", "unpack: rar", r"files\[0\] \(a.zip\): field 'unpack' must be one of"),
        ("dest: a}", "dest: ../a}", r"files\[0\] \(a.zip\): field 'dest' must be a relative path"),
        ("dest: a}", "dest: a, sha: 1}", r"files\[0\] \(a.zip\): unknown field\(s\) \['sha'\]"),
        ("provides: [a]", "provides: [b/c]", r"source 'a': field 'provides': 'b/c' is not under any file's 'dest'"),
        ("provides: [a]", "provides: []", r"source 'a': field 'provides' must be a non-empty list"),
        ("unpack: zip, dest: a}", "dest: .}", r"files\[0\] \(a.zip\): field 'dest' of a plain file must name"),
        ("unpack: zip, ", "strip_top_level: x, ", r"'strip_top_level' is 'auto' or a folder name, and only for arch"),
        ("dest: a}", "dest: a, approx_size: lots}", r"field 'approx_size' must be a positive number"),
        ("kind: https", "kind: manual", r"source 'a': a manual source needs 'instructions'"),
        ("group: train", "group: train\n    color: red", r"source 'a': unknown field\(s\) \['color'\]"),
    ],
)
def test_invalid_manifest_names_the_source_and_the_field(tmp_path, old, new, message):
    text = GOOD.replace(old, new)
    assert text != GOOD
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError, match=message):
        load_sources(path)


def test_every_problem_is_reported_at_once_each_naming_source_file_and_field(tmp_path):
    path = tmp_path / "sources.yaml"
    text = GOOD.replace("group: train", "group: training").replace("dest: a}", "dest: a, size: -1}")
    path.write_text(
        text + '  B-c:\n    group: train\n    files: [{name: b, kind: https, url: "https://x/b", dest: b}]\n'
    )
    with pytest.raises(ManifestError) as info:
        load_sources(path)
    assert str(info.value).splitlines() == [
        f"{path}: 4 problems:",
        "  source 'a': field 'group' must be one of 'train', 'benchmark', got 'training'",
        "  source 'a': files[0] (a.zip): field 'size' must be a positive number of bytes",
        "  source 'B-c': the name must be lower-case letters, digits and '_'",
        "  source 'B-c': field 'provides' is missing",
    ]
    assert isinstance(info.value, SourceError) and isinstance(info.value, UserError)  # the CLI: one line, exit 2


def test_a_field_set_on_the_source_is_reported_there_once(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text(GOOD.replace("kind: https", "kind: huggingface\n    repo: x/y\n    repo_type: datasets"))
    with pytest.raises(ManifestError) as info:
        load_sources(path)
    assert str(info.value) == (
        f"{path}: source 'a': field 'repo_type' must be one of 'dataset', 'model', 'space', got 'datasets'"
    )


GDRIVE = GOOD.replace("kind: https", "kind: gdrive").replace('url: "https://x/a.zip", ', "FIELDS")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("id: 1AbC_d-9, folder: 1XyZ, ", r"files\[0\] \(a.zip\): a gdrive file takes 'id' or 'folder', not both"),
        ("folder: 'not/an id', ", r"files\[0\] \(a.zip\): field 'folder' is not a Google Drive folder id"),
        ("id: 'x y', ", r"files\[0\] \(a.zip\): field 'id' is not a Google Drive file id"),
        (
            "folder: 1XyZ, filename: [a], ",
            r"files\[0\] \(a.zip\): field 'filename' \(the file's name in .*\) must be a",
        ),
    ],
)
def test_gdrive_files_take_an_id_or_a_folder(tmp_path, fields, message):
    path = tmp_path / "sources.yaml"
    path.write_text(GDRIVE.replace("FIELDS", fields))
    with pytest.raises(ManifestError, match=message):
        load_sources(path)


def test_a_gdrive_file_given_by_its_folder_is_named_by_its_title(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text(GDRIVE.replace("FIELDS", "folder: 1XyZ, "))
    [f] = load_sources(path)["a"].files
    assert (f.id, f.folder, f.filename) == (None, "1XyZ", "a.zip")
    assert f.remote == "https://drive.google.com/drive/folders/1XyZ"
    path.write_text(GDRIVE.replace("FIELDS", "folder: 1XyZ, filename: Data Set.zip, "))
    assert load_sources(path)["a"].files[0].filename == "Data Set.zip"
    path.write_text(GOOD.replace('url: "https://x/a.zip", ', 'url: "https://x/a.zip", folder: 1XyZ, '))
    with pytest.raises(ManifestError, match=r"files\[0\] \(a.zip\): field 'folder' is only for gdrive files"):
        load_sources(path)


def test_overlapping_destinations_are_refused(tmp_path):
    path = tmp_path / "sources.yaml"
    second = """
  b:
    group: train
    kind: https
    files:
      - {name: b.json, url: "https://x/b.json", dest: a/b.json}
    provides: [a/b.json]
"""
    path.write_text(GOOD + second)
    with pytest.raises(ManifestError, match=r"source 'b': file 'b.json': field 'dest' 'a/b.json' overlaps .* a/a.zip"):
        load_sources(path)


def test_only_a_sources_own_plain_files_may_go_inside_its_archive_folder(tmp_path):
    path = tmp_path / "sources.yaml"
    inside = '\n      - {name: b.json, url: "https://x/b.json", dest: a/b.json}\n    provides: [a, a/b.json]'
    path.write_text(GOOD.replace("\n    provides: [a]", inside))
    assert [f.dest for f in load_sources(path)["a"].files] == ["a", "a/b.json"]
    nested = '\n      - {name: b.zip, url: "https://x/b.zip", unpack: zip, dest: a/b}\n    provides: [a]'
    path.write_text(GOOD.replace("\n    provides: [a]", nested))
    with pytest.raises(ManifestError, match=r"source 'a': file 'b.zip': field 'dest' 'a/b' overlaps .* of a/a.zip"):
        load_sources(path)


def test_unreadable_manifest(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text("sources: [")
    with pytest.raises(ManifestError, match="cannot read the data manifest"):
        load_sources(path)
    with pytest.raises(ManifestError, match="cannot read"):
        load_sources(tmp_path / "missing.yaml")


def test_committed_lock_is_valid_and_names_known_files(sources):
    lock = REPO / DEFAULT_LOCK  # relative: the lock of the checkout the workflow runs from
    assert lock.is_file()
    entries = read_lock(lock)
    known = {f"{s.name}/{f.name}" for s in sources.values() for f in s.files}
    assert set(entries) <= known
    assert all(re.fullmatch(r"[0-9a-f]{64}", e.sha256) and e.size > 0 for e in entries.values())


def test_update_lock_is_atomic_and_keeps_other_entries(tmp_path):
    lock = tmp_path / "config" / "sources.lock.json"
    assert read_lock(lock) == {}
    update_lock(lock, {"a/x": LockEntry("1" * 64, 1), "b/y": LockEntry("2" * 64, 2)})
    update_lock(lock, {"a/x": LockEntry("3" * 64, 3)})
    assert read_lock(lock) == {"a/x": LockEntry("3" * 64, 3), "b/y": LockEntry("2" * 64, 2)}
    assert [p.name for p in lock.parent.iterdir()] == ["sources.lock.json"]  # no temp file left behind
    assert list(json.loads(lock.read_text())["files"]) == ["a/x", "b/y"]  # sorted: stable diffs


def test_concurrent_lock_updates_lose_nothing(tmp_path):
    lock = tmp_path / "sources.lock.json"
    threads = [threading.Thread(target=update_lock, args=(lock, {f"s/{i}": LockEntry(f"{i:064x}", i + 1)}))
               for i in range(16)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(read_lock(lock)) == 16


def test_malformed_lock_is_an_error(tmp_path):
    lock = tmp_path / "sources.lock.json"
    lock.write_text('{"files": {"a/x": {"sha256": "1"}}}')
    with pytest.raises(LockError, match="malformed"):
        read_lock(lock)
    with pytest.raises(LockError):
        update_lock(lock, {"b/y": LockEntry("2" * 64, 2)})
    assert Path(lock).read_text() == '{"files": {"a/x": {"sha256": "1"}}}'
