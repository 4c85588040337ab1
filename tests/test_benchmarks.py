"""Tests for clip_flant5.benchmarks: every adapter reads the demo benchmarks (real formats), oracle and reversed
score matrices give the best and worst metric, format errors name the file, and pairs/score_matrices round-trip.

Ground truth is read here straight from the demo files, independently of the adapters.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from clip_flant5 import metrics  # noqa: F401  (the adapters' metrics; imported so a missing module fails here)
from clip_flant5.benchmarks import (
    PICKAPIC_SUBSET,
    REGISTRY,
    Benchmark,
    BenchmarkFormatError,
    Item,
    get_benchmark,
    pairs,
    score_matrices,
)
from clip_flant5.benchmarks.pickapic import PickAPic
from clip_flant5.demo import GENAI_MODELS, make_demo_data
from clip_flant5.errors import UserError
from clip_flant5.sources import DEFAULT_SOURCES

NAMES = [
    "winoground",
    "eqben",
    "drawbench",
    "editbench",
    "coco_t2i",
    "tifa160",
    "pickapic",
    "genai_bench_527",
    "genai_bench_1600",
]
TIFA_NAMES = {
    "mini-dalle": "mini_dalle",
    "vq-diffusion": "vq_diffusion",
    "sd1dot1": "stable_diffusion_v1_1",
    "sd1dot5": "stable_diffusion_v1_5",
    "sd2dot1": "stable_diffusion_v2_1",
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "demo"
    manifest = make_demo_data(out, scale=0.2)
    return out / "benchmarks", manifest["counts"]


def root_of(demo, name: str) -> Path:
    """The demo folder of a benchmark; GenAI-Bench-1600 shares 527's format, so it reads 527's demo folder."""
    folder = "genai_bench_527" if name == "genai_bench_1600" else get_benchmark(name).folder
    return demo[0] / folder


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# -- ground truth, read independently -------------------------------------------------------------------------


def seetrue_labels(root: Path, source: str) -> dict[str, int]:
    rows = read_csv(root / "SeeTRUE.csv")
    return {f"images/{r['image']}": int(r["label"]) for r in rows if r["dataset_source"] == source}


def human_scores(name: str, root: Path) -> dict[str, float]:
    """Image (relative path) -> mean of its ratings."""
    ratings: dict[str, list[int]] = {}
    if name == "tifa160":
        for row in read_csv(root / "dsg_tifa160_anns.csv"):
            image = f"{row['source_id']}_{TIFA_NAMES[row['model_type']]}.jpg"
            ratings.setdefault(image, []).append(int(row["answer"]))
    else:
        for key, entry in json.loads((root / "genai_image.json").read_text()).items():
            for model, values in entry["models"].items():
                ratings[f"{model}/{key}.jpeg"] = values
    return {image: float(np.mean(values)) for image, values in ratings.items()}


def oracle(name: str, root: Path, items: list[Item], reverse: bool = False) -> list[np.ndarray]:
    """Score matrices that agree perfectly with the ground truth (or, reversed, disagree perfectly)."""
    sign = -1.0 if reverse else 1.0
    if name in ("winoground", "eqben"):
        return [sign * np.eye(2) for _ in items]
    if name in ("drawbench", "editbench", "coco_t2i"):
        labels = seetrue_labels(root, name)
        return [np.array([[sign * labels[item.images[0]]]]) for item in items]
    if name == "pickapic":
        records = json.loads((root / "test_captions.json").read_text())
        preferred = [records[int(item.id)]["label_0"] == 1 for item in items]
        return [sign * np.array([[1.0], [0.0]] if first else [[0.0], [1.0]]) for first in preferred]
    human = human_scores(name, root)
    return [sign * np.array([[human[image]] for image in item.images]) for item in items]


# -- registry -------------------------------------------------------------------------------------------------


def test_registry_lists_the_nine_benchmarks():
    assert list(REGISTRY) == NAMES
    for name, bench in REGISTRY.items():
        assert isinstance(bench, Benchmark) and bench.name == name and get_benchmark(name) is bench
        assert bench.metric in ("group", "auroc", "pairwise_accuracy", "binary_accuracy")
        assert bench.version and bench.layout
    assert {REGISTRY[n].folder for n in ("drawbench", "editbench", "coco_t2i")} == {"seetrue"}
    with pytest.raises(ValueError, match="unknown benchmark 'nope'.*winoground.*genai_bench_1600"):
        get_benchmark("nope")


def test_folders_are_benchmark_sources():
    sources = yaml.safe_load(DEFAULT_SOURCES.read_text())["sources"]
    for bench in REGISTRY.values():
        assert sources[bench.folder]["group"] == "benchmark", bench.name


# -- reading --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_items_match_the_files(demo, name):
    root, counts = root_of(demo, name), demo[1]
    items = get_benchmark(name).items(root)
    n_images = sum(len(item.images) for item in items)
    expected = {
        "winoground": (counts["winoground"]["items"], 2, 2),
        "eqben": (counts["eqben"]["items"], 2, 2),
        "tifa160": (counts["tifa160"]["prompts"], 5, 1),
        "pickapic": (sum(i < counts["pickapic"]["items"] for i in PICKAPIC_SUBSET), 2, 1),
        "genai_bench_527": (counts["genai_bench_527"]["prompts"], len(GENAI_MODELS), 1),
        "genai_bench_1600": (counts["genai_bench_527"]["prompts"], len(GENAI_MODELS), 1),
    }.get(name, (counts["seetrue"]["by_source"].get(name), 1, 1))
    assert len(items) == expected[0] > 0
    assert all(len(item.images) == expected[1] and len(item.texts) == expected[2] for item in items)
    assert len({item.id for item in items}) == len(items)
    for item in items:
        assert isinstance(item, Item) and all(isinstance(t, str) and t for t in item.texts)
        for image in item.images:
            assert not Path(image).is_absolute() and (root / image).is_file(), image
    if name == "tifa160":
        assert n_images == counts["tifa160"]["images"]
    assert get_benchmark(name).items(str(root)) == items  # str roots work, reading is deterministic


@pytest.mark.parametrize("name", NAMES)
def test_pairs_are_unique_and_cover_every_item(demo, name):
    root = root_of(demo, name)
    items = get_benchmark(name).items(root)
    found = pairs(name, root)
    keys = [(p["image"], p["text"]) for p in found]
    assert len(keys) == len(set(keys))
    assert set(keys) == {(i, t) for item in items for i in item.images for t in item.texts}
    assert found == pairs(get_benchmark(name), root)
    if name not in ("drawbench", "editbench", "coco_t2i"):  # SeeTRUE may repeat a pair; these never do here
        assert len(keys) == sum(len(item.images) * len(item.texts) for item in items)


@pytest.mark.parametrize("name", NAMES)
def test_score_matrices_round_trip(demo, name):
    root = root_of(demo, name)
    found = pairs(name, root)
    scored = {(p["image"], p["text"]): float(k) for k, p in enumerate(found)}
    matrices = score_matrices(name, root, scored)
    items = get_benchmark(name).items(root)
    assert len(matrices) == len(items)
    for item, matrix in zip(items, matrices, strict=True):
        assert matrix.shape == (len(item.images), len(item.texts))
        for i, image in enumerate(item.images):
            for t, text in enumerate(item.texts):
                assert matrix[i, t] == scored[(image, text)]
    del scored[next(iter(scored))]
    with pytest.raises(UserError, match=f"{name}: 1 \\(image, text\\) pairs have no score"):
        score_matrices(name, root, scored)


# -- evaluation -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_oracle_scores_are_perfect_and_reversed_ones_fail(demo, name):
    bench, root = get_benchmark(name), root_of(demo, name)
    items = bench.items(root)
    good = bench.evaluate(root, oracle(name, root, items))
    bad = bench.evaluate(root, oracle(name, root, items, reverse=True))
    for result in (good, bad):
        assert result["benchmark"] == name and result["version"] == bench.version
        assert result["metric"] == bench.metric and result["n_items"] == len(items)
        assert isinstance(result["value"], float)
        json.dumps(result)  # plain Python values
    assert good["value"] == 1.0
    if bench.metric == "pairwise_accuracy":
        human = np.array(list(human_scores(name, root).values()))
        _, counts = np.unique(human, return_counts=True)
        assert (counts > 1).any()  # human ties exist, and the oracle's metric ties match them at epsilon 0
        assert good["epsilon"] == 0.0 and good["n_images"] == len(human)
        assert good["pearson"] == pytest.approx(1.0) and good["kendall_tau_b"] == pytest.approx(1.0)
        assert bad["pearson"] == pytest.approx(-1.0) and bad["kendall_tau_b"] == pytest.approx(-1.0)
        assert bad["value"] < 0.5
    else:
        assert bad["value"] == 0.0
    if bench.metric == "group":
        assert good["text"] == good["image"] == 1.0 and bad["text"] == bad["image"] == 0.0
    if bench.metric == "auroc":
        labels = seetrue_labels(root, name)
        assert good["n_pos"] == sum(labels.values()) and good["n_pos"] + good["n_neg"] == len(items)


def test_winoground_ties_are_not_correct(demo):
    root = root_of(demo, "winoground")
    items = get_benchmark("winoground").items(root)
    result = get_benchmark("winoground").evaluate(root, [np.ones((2, 2)) for _ in items])
    assert result["group"] == result["text"] == result["image"] == result["value"] == 0.0


def test_winoground_text_and_image_scores(demo):
    bench, root = get_benchmark("eqben"), root_of(demo, "eqben")
    n = len(bench.items(root))
    text_only = np.array([[0.9, 0.1], [0.95, 0.99]])  # each image prefers its caption; caption 0 prefers image 1
    result = bench.evaluate(root, [text_only] * n)
    assert (result["text"], result["image"], result["group"]) == (1.0, 0.0, 0.0)
    assert result["subsets"]["eqbenk"]["n_items"] == n  # the demo's subsets are all Kubric


def test_pickapic_uses_the_fixed_subset(demo):
    bench, root = get_benchmark("pickapic"), root_of(demo, "pickapic")
    assert len(PICKAPIC_SUBSET) == len(set(PICKAPIC_SUBSET)) == 100 and max(PICKAPIC_SUBSET) == 493
    items = bench.items(root)
    n_rows = demo[1]["pickapic"]["items"]
    assert [item.id for item in items] == [str(i) for i in PICKAPIC_SUBSET if i < n_rows]
    result = bench.evaluate(root, oracle("pickapic", root, items))
    assert result["n_subset"] == 100 and result["n_missing"] == 100 - len(items) and "fixed indices" in result["note"]
    # Ties go to image 0: with equal scores, accuracy is the share of items preferring image 0.
    records = json.loads((root / "test_captions.json").read_text())
    share = np.mean([records[int(item.id)]["label_0"] == 1 for item in items])
    assert bench.evaluate(root, [np.zeros((2, 1)) for _ in items])["value"] == share


def test_pickapic_every_row(demo):
    bench, root = PickAPic(indices=None), root_of(demo, "pickapic")
    items = bench.items(root)
    assert len(items) == demo[1]["pickapic"]["items"]
    assert bench.evaluate(root, oracle("pickapic", root, items))["value"] == 1.0
    assert "n_missing" not in bench.evaluate(root, oracle("pickapic", root, items))
    records = json.loads((root / "test_captions.json").read_text())
    share = np.mean([r["label_0"] == 1 for r in records])
    assert 0 < share < 1 and bench.evaluate(root, [np.zeros((2, 1)) for _ in items])["value"] == share


def test_evaluate_checks_the_scores(demo):
    bench, root = get_benchmark("winoground"), root_of(demo, "winoground")
    n = len(bench.items(root))
    with pytest.raises(ValueError, match=f"winoground: {n - 1} score matrices for {n} items"):
        bench.evaluate(root, [np.eye(2)] * (n - 1))
    with pytest.raises(ValueError, match=r"item '0' has a score matrix of shape \(2, 1\), not \(2, 2\)"):
        bench.evaluate(root, [np.ones((2, 1))] + [np.eye(2)] * (n - 1))
    with pytest.raises(ValueError, match="item '1' has a non-finite score"):
        bench.evaluate(root, [np.eye(2), np.full((2, 2), np.nan)] + [np.eye(2)] * (n - 2))


# -- format errors --------------------------------------------------------------------------------------------


@pytest.fixture
def copy(demo, tmp_path):
    def make(name: str) -> Path:
        return Path(shutil.copytree(root_of(demo, name), tmp_path / name))

    return make


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("winoground", "metadata.csv"),
        ("eqben", "all_select.json"),
        ("drawbench", "SeeTRUE.csv"),
        ("tifa160", "tifa160.json"),
        ("tifa160", "dsg_tifa160_anns.csv"),
        ("pickapic", "test_captions.json"),
        ("genai_bench_527", "genai_image.json"),
        ("genai_bench_1600", "genai_image.json"),
    ],
)
def test_missing_file_is_named(copy, name, file):
    root = copy(name)
    (root / file).unlink()
    bench = get_benchmark(name)
    with pytest.raises(BenchmarkFormatError) as error:
        bench.items(root)
    message = str(error.value)
    assert message.startswith(f"{name}: {root / file} not found; expected ")
    assert file in message.split("; expected ")[1] and f"(clip-flant5 fetch {bench.folder})" in message
    assert isinstance(error.value, ValueError) and error.value.path == root / file
    with pytest.raises(BenchmarkFormatError):
        bench.evaluate(root, [])
    with pytest.raises(BenchmarkFormatError):
        pairs(name, root)


def drop_csv_column(path: Path, column: str) -> None:
    rows = read_csv(path)
    header = [c for c in rows[0] if c != column]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize(
    ("name", "file", "column"),
    [
        ("winoground", "metadata.csv", "caption_1"),
        ("coco_t2i", "SeeTRUE.csv", "label"),
        ("tifa160", "dsg_tifa160_anns.csv", "answer"),
    ],
)
def test_missing_column_is_named(copy, name, file, column):
    root = copy(name)
    drop_csv_column(root / file, column)
    with pytest.raises(BenchmarkFormatError, match=f"^{name}: .*{file} lacks column\\(s\\) {column} \\(header: "):
        get_benchmark(name).items(root)


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_missing_json_keys_are_named(copy):
    root = copy("eqben")
    edit_json(root / "all_select.json", lambda data: data[1].pop("caption1"))
    with pytest.raises(BenchmarkFormatError, match=r"all_select.json record 1 lacks key 'caption1' \(has "):
        get_benchmark("eqben").items(root)

    root = copy("genai_bench_527")
    key = next(iter(json.loads((root / "genai_image.json").read_text())))
    edit_json(root / "genai_image.json", lambda data: data[key]["models"].update(DALLE_3="5"))
    with pytest.raises(BenchmarkFormatError, match=f"entry '{key}': ratings of DALLE_3 are '5', not a list"):
        get_benchmark("genai_bench_527").items(root)

    root = copy("pickapic")
    edit_json(root / "test_captions.json", lambda data: data[1].update(id=7))
    with pytest.raises(BenchmarkFormatError, match="record 1 has id 7, not its index 1"):
        get_benchmark("pickapic").items(root)


def test_json_of_the_wrong_shape(copy):
    root = copy("pickapic")
    (root / "test_captions.json").write_text('{"0": {}}')
    with pytest.raises(BenchmarkFormatError, match="test_captions.json holds a JSON dict, not a list; expected"):
        get_benchmark("pickapic").items(root)
    (root / "test_captions.json").write_text("[{")
    with pytest.raises(BenchmarkFormatError, match="test_captions.json is not valid JSON"):
        get_benchmark("pickapic").items(root)


def test_winoground_ids_must_be_row_numbers(copy):
    root = copy("winoground")
    path = root / "metadata.csv"
    path.write_text(path.read_text().replace("\n1,", "\n5,", 1))
    with pytest.raises(BenchmarkFormatError, match="line 3: id is '5', not the row number 1"):
        get_benchmark("winoground").items(root)


def test_tifa_ratings_and_images_must_match(copy):
    root = copy("tifa160")
    anns = root / "dsg_tifa160_anns.csv"
    rows = read_csv(anns)
    first = f"{rows[0]['source_id']}_{TIFA_NAMES[rows[0]['model_type']]}"
    kept = [r for r in rows if f"{r['source_id']}_{TIFA_NAMES[r['model_type']]}" != first]
    with open(anns, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    with pytest.raises(BenchmarkFormatError, match=f"dsg_tifa160_anns.csv has no ratings for image '{first}'"):
        get_benchmark("tifa160").items(root)
    edit_json(root / "tifa160.json", lambda data: data.pop(first))
    assert len(get_benchmark("tifa160").items(root)) == demo_prompts(root)
    with open(anns, "a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow(["tifa160", "dalle-9", "tifa160_0", "coco_1", "1", "q", "3"])
    with pytest.raises(BenchmarkFormatError, match="unknown model_type 'dalle-9'"):
        get_benchmark("tifa160").items(root)


def demo_prompts(root: Path) -> int:
    return len({entry["text_id"] for entry in json.loads((root / "tifa160.json").read_text()).values()})


def test_seetrue_labels_and_sources(copy):
    root = copy("drawbench")
    path = root / "SeeTRUE.csv"
    rows = read_csv(path)
    rows[0]["label"] = "yes"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    name = rows[0]["dataset_source"]
    with pytest.raises(BenchmarkFormatError, match="line 2: label is 'yes', not 0 or 1"):
        get_benchmark(name).items(root)
    for row in rows:
        row["dataset_source"] = "coco_t2i"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[1:])
    with pytest.raises(BenchmarkFormatError, match="has no rows with dataset_source 'editbench' \\(found: coco_t2i\\)"):
        get_benchmark("editbench").items(root)


def test_missing_image_folder_is_named(copy):
    root = copy("genai_bench_527")
    shutil.rmtree(root / "Midjourney_6")
    bench = get_benchmark("genai_bench_527")
    with pytest.raises(BenchmarkFormatError, match=f"{root / 'Midjourney_6'} not found \\(a folder of images, e.g. "):
        bench.items(root)
    items = bench.items(root, check_folders=False)  # reading the ground truth does not need the images
    assert bench.evaluate(root, oracle("genai_bench_527", root, items))["value"] == 1.0
