"""Paper tables and plots from metrics files (clip_flant5.tables)."""

import io
import json
import math

import pandas as pd
import pytest

from clip_flant5.plots import plot_correlation
from clip_flant5.tables import (
    DELTA,
    build_tables,
    genai_table,
    load_published,
    main_table,
    write_tables,
)

PNG = b"\x89PNG\r\n\x1a\n"
COMPARE = {"clip-flant5-xxl": "vqascore-clip-flant5-xxl", "clip-flant5-xl": "vqascore-clip-flant5-xl"}
CORR = {"pearson": 0.48, "kendall_tau_b": 0.37}


def metrics():
    return [
        {"model": "tiny-stage2", "benchmark": "winoground", "version": "1", "metric": "group", "value": 0.25,
         "n_items": 40, "text": 0.4, "image": 0.3, "group": 0.25},
        {"model": "clip-flant5-xxl", "benchmark": "winoground", "metric": "group", "value": 0.4475},
        {"model": "clip-flant5-xxl", "benchmark": "drawbench", "metric": "auroc", "value": 0.8612},
        {"model": "clip-flant5-xxl", "benchmark": "genai_bench_527", "metric": "pairwise_accuracy", "value": 0.6,
         "pairwise_accuracy": 0.6, "epsilon": 0.0, **CORR},
        {"model": "clip-flant5-xxl", "benchmark": "genai_bench_1600", "metric": "pairwise_accuracy", "value": 0.652,
         "pairwise_accuracy": 0.652, "epsilon": 0.001, **CORR},
    ]  # fmt: skip


def write_metrics(tmp_path, records):
    paths = []
    for i, r in enumerate(records):
        paths.append(tmp_path / f"m{i}.json")
        paths[-1].write_text(json.dumps(r))
    return paths


def test_published_yaml_has_all_rows():
    pub = load_published()
    assert list(pub["main"]["columns"]) == [
        "winoground", "eqben", "drawbench", "editbench", "coco_t2i", "tifa160", "pickapic", "genai_bench"
    ]  # fmt: skip
    assert len(pub["main"]["rows"]) == 10
    assert all(len(r["values"]) == 8 for r in pub["main"]["rows"].values())
    assert pub["main"]["rows"]["vqascore-clip-flant5-xl"]["source"] == "CLIP-FlanT5 model zoo"
    assert pub["genai_bench"]["rows"]["vqascore-clip-flant5"]["video"] == {
        "pairwise": 63.2,
        "pearson": 50.6,
        "kendall": 38.2,
    }
    assert pub["model_zoo_video"]["values"] == {"vqascore-clip-flant5-xxl": 63.2, "vqascore-clip-flant5-xl": 60.2}


def test_main_table_rows_percent_and_delta():
    df = main_table(metrics(), compare=COMPARE)
    assert list(df.index[:3]) == ["tiny-stage2", "clip-flant5-xxl", "clip-flant5-xxl Δ"]
    assert list(df.columns[3:]) == [
        "winoground", "eqben", "drawbench", "editbench", "coco_t2i", "tifa160", "pickapic", "genai_bench"
    ]  # fmt: skip
    # published rows, exactly as published
    assert df.loc["vqascore-clip-flant5-xxl", "winoground"] == 46.0
    assert df.loc["vqascore-clip-flant5-xl", "genai_bench"] == 61.8
    assert df.loc["clipscore-clip-l-14"].iloc[3:].tolist() == [7.8, 25.0, 49.1, 60.6, 63.7, 54.1, 76.0, 50.8]
    assert (df["row"] == "published").sum() == 10
    # ours in percent, 1 decimal; GenAI-Bench-1600 preferred over 527, with a note
    assert df.loc["tiny-stage2", "winoground"] == 25.0
    assert math.isnan(df.loc["tiny-stage2", "eqben"])
    assert df.loc["clip-flant5-xxl", "drawbench"] == 86.1
    assert df.loc["clip-flant5-xxl", "genai_bench"] == 65.2
    assert any("clip-flant5-xxl" in n and "1600" in n and "527" in n for n in df.attrs["notes"])
    # delta row: ours - published, blank where ours is missing; tiny-stage2 has no counterpart
    delta = df.loc["clip-flant5-xxl Δ"]
    assert delta["row"] == DELTA and delta["model"] == "CLIP-FlanT5-XXL"
    for col in ("winoground", "drawbench", "genai_bench"):
        pub = df.loc["vqascore-clip-flant5-xxl", col]
        assert delta[col] == pytest.approx(df.loc["clip-flant5-xxl", col] - pub, abs=1e-9)
    assert delta["winoground"] == pytest.approx(-1.2) and math.isnan(delta["eqben"])
    assert "tiny-stage2 Δ" not in df.index


def test_genai_table():
    df = genai_table(metrics(), compare=COMPARE)
    assert df.loc["clip-flant5-xxl", ["image_pairwise", "image_pearson", "image_kendall"]].tolist() == [
        65.2,
        48.0,
        37.0,
    ]
    assert df.loc["vqascore-clip-flant5"].iloc[3:].tolist() == [64.1, 49.9, 39.8, 63.2, 50.6, 38.2]
    assert df.loc["clipscore", ["image_pairwise", "image_pearson", "image_kendall"]].tolist() == [50.8, 16.4, 11.8]
    assert df.loc["clip-flant5-xxl Δ", "image_pearson"] == pytest.approx(48.0 - 49.9)
    assert df.loc["vqascore-clip-flant5-xl-zoo-video", "video_pairwise"] == 60.2
    assert "tiny-stage2" not in df.index


def test_write_tables_formats(tmp_path):
    df = main_table(metrics(), compare=COMPARE)
    paths = write_tables(df, tmp_path / "main")
    assert [p.name for p in paths] == ["main.csv", "main.md", "main.tex"]
    back = pd.read_csv(paths[0], index_col="key")
    assert back.loc["vqascore-clip-flant5-xxl", "eqben"] == 47.9
    assert back.loc["clip-flant5-xxl Δ", "winoground"] == pytest.approx(-1.2)
    md = paths[1].read_text().splitlines()
    assert md[0].startswith("**Image-text alignment")
    assert "| row | method | model | Winoground | EqBen | DrawBench |" in md[2]
    assert "| Δ vs published | VQAScore | CLIP-FlanT5-XXL | -1.2 |" in "\n".join(md)
    assert any(line.startswith("- clip-flant5-xxl: GenAI-Bench = GenAI-Bench-1600") for line in md)
    tex = paths[2].read_text()
    assert "\\begin{tabular}{lllrrrrrrrr}" in tex and "\\toprule" in tex and "\\end{tabular}" in tex
    assert "genai\\_bench\\_527" not in tex and "GenAI-Bench-527" in tex
    escaped = write_tables(df.rename(columns={"coco_t2i": "coco_t2i%"}), tmp_path / "esc")[2].read_text()
    assert "coco\\_t2i\\%" in escaped and "coco_t2i" not in escaped
    assert not list(tmp_path.glob(".*.tmp"))


def test_build_tables_and_plots(tmp_path):
    paths = build_tables(write_metrics(tmp_path, metrics()), tmp_path / "out", COMPARE)
    names = sorted(p.name for p in paths)
    assert names == sorted([f"{s}.{e}" for s in ("main", "genai_bench") for e in ("csv", "md", "tex")] + ["main.png"])
    assert all(p.is_file() for p in paths)
    assert (tmp_path / "out" / "main.png").read_bytes().startswith(PNG)
    assert pd.read_csv(io.StringIO((tmp_path / "out" / "genai_bench.csv").read_text())).shape[0] == 6
    png = plot_correlation([1, 2, 3, 4, 5], [0.1, 0.3, 0.2, 0.8, 0.9], "TIFA160", tmp_path / "plots" / "tifa.png")
    assert png.read_bytes().startswith(PNG)


@pytest.mark.parametrize(
    "record, message",
    [
        ({"model": "m", "benchmark": "winogrande", "metric": "group", "value": 0.1}, "unknown benchmark"),
        ({"model": "m", "benchmark": "eqben", "metric": "group"}, r"missing keys \['value'\]"),
        ({"model": "m", "benchmark": "genai_bench_527", "metric": "p", "value": 0.5}, "missing keys"),
        ({"model": "m", "benchmark": "eqben", "metric": "group", "value": "high"}, "must be a number"),
        ({"model": None, "benchmark": "eqben", "metric": "group", "value": 0.1}, "model must be"),
    ],
)
def test_bad_input_names_the_file(tmp_path, record, message):
    good, bad = write_metrics(tmp_path, [metrics()[0], record])
    with pytest.raises(ValueError, match=message) as err:
        build_tables([good, bad], tmp_path / "out")
    assert str(bad) in str(err.value) and str(good) not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_bad_json_and_duplicates_and_unknown_compare(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        build_tables([broken], tmp_path / "out")
    a, b = write_metrics(tmp_path, [metrics()[0], metrics()[0]])
    with pytest.raises(ValueError, match="m1.json: duplicate"):
        main_table([a, b])
    with pytest.raises(ValueError, match="unknown published rows"):
        main_table(metrics(), compare={"clip-flant5-xxl": "vqascore-clip-flant5-xxxl"})
