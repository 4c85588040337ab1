"""Paper tables and report plots from per-(model, benchmark) metrics files (spec: scoring.md "Published numbers").

A metrics file is one JSON dict: `model`, `benchmark`, `metric`, `value` (a fraction) and, for the correlation
benchmarks (TIFA160, GenAI-Bench), `pearson`, `kendall`, `pairwise_accuracy`. Tables are in percent, 1 decimal,
next to the published rows of `published.yaml`; a compared model gets a `Δ vs published` row (ours - published,
both as displayed) right under its own row.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from .atomic import atomic_path
from .benchmarks import REGISTRY
from .errors import UserError
from .plots import pyplot, savefig

BENCHMARKS = {name: bench.table_column for name, bench in REGISTRY.items()}  # benchmark -> main table column
REQUIRED = ("model", "benchmark", "metric", "value")
CORRELATION = ("pairwise_accuracy", "pearson", "kendall_tau_b")
GENAI_STATS = {"pairwise": "pairwise_accuracy", "pearson": "pearson", "kendall": "kendall_tau_b"}
GENAI_COLUMNS = [f"{media}_{stat}" for media in ("image", "video") for stat in GENAI_STATS]
GENAI_LABELS = {
    c: c.replace("_", " ").capitalize().replace("pearson", "Pearson").replace("kendall", "Kendall")
    for c in GENAI_COLUMNS
}
OURS, DELTA, PUBLISHED = "ours", "Δ vs published", "published"
TEXT_COLUMNS = ["row", "method", "model"]


def load_published(path: str | os.PathLike | None = None) -> dict:
    text = Path(path).read_text() if path else resources.files(__package__).joinpath("published.yaml").read_text()
    return yaml.safe_load(text)


def load_metrics(items: Iterable[str | os.PathLike | Mapping]) -> list[dict]:
    """Read and check metrics files (or dicts); UserError naming the file on bad input or a duplicate."""
    out, seen = [], {}
    for i, item in enumerate(items):
        if isinstance(item, str | os.PathLike):
            name = str(item)
        else:
            name = item.get("_source", f"metrics[{i}]") if isinstance(item, Mapping) else f"metrics[{i}]"
        try:
            record = json.loads(Path(item).read_text()) if isinstance(item, str | os.PathLike) else dict(item)
        except (OSError, TypeError, ValueError) as e:
            raise UserError(f"{name}: cannot read metrics: {e}") from e
        if not isinstance(record, dict):
            raise UserError(f"{name}: metrics must be a JSON object")
        bench = record.get("benchmark")
        if bench not in BENCHMARKS:
            raise UserError(f"{name}: unknown benchmark {bench!r} (known: {', '.join(BENCHMARKS)})")
        keys = REQUIRED + (CORRELATION if REGISTRY[bench].human_ratings else ())
        missing = [k for k in keys if k not in record]
        if missing:
            raise UserError(f"{name}: missing keys {missing}")
        for k in ("value",) + CORRELATION:
            if k in record and (isinstance(record[k], bool) or not isinstance(record[k], int | float)):
                raise UserError(f"{name}: {k} must be a number, got {record[k]!r}")
        if not isinstance(record["model"], str) or not record["model"]:
            raise UserError(f"{name}: model must be a non-empty string, got {record['model']!r}")
        key = (record["model"], bench)
        if key in seen:
            raise UserError(f"{name}: duplicate metrics for {key} (also in {seen[key]})")
        seen[key] = name
        out.append({**record, "_source": name})
    return out


def _pct(x: float) -> float:
    return round(100 * x, 1)  # NaN stays NaN


def _by_model(metrics: list[dict]) -> dict[str, dict[str, dict]]:
    """model -> main column -> record (GenAI-Bench-1600 preferred over 527), models in first-seen order."""
    models: dict[str, dict[str, dict]] = {}
    for r in metrics:
        cols = models.setdefault(r["model"], {})
        col = BENCHMARKS[r["benchmark"]]
        if col not in cols or r["benchmark"] == "genai_bench_1600":
            cols[col] = r
    return models


def _genai_notes(models: dict[str, dict[str, dict]], metrics: list[dict]) -> list[str]:
    notes = []
    for model, cols in models.items():
        if "genai_bench" in cols:
            used = cols["genai_bench"]["benchmark"]
            both = sum(r["model"] == model and r["benchmark"].startswith("genai_bench") for r in metrics) > 1
            extra = " (GenAI-Bench-527 also scored, not shown)" if both else ""
            notes.append(f"{model}: GenAI-Bench = {used.replace('genai_bench_', 'GenAI-Bench-')}{extra}.")
    return notes


def _check_compare(compare: Mapping[str, str] | None, rows: Mapping) -> dict[str, str]:
    compare = dict(compare or {})
    unknown = sorted(set(compare.values()) - set(rows))
    if unknown:
        raise UserError(f"compare names unknown published rows {unknown} (known: {', '.join(rows)})")
    return compare


def main_table(metrics, published: dict | None = None, compare: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Our models (first-seen order, each followed by its `Δ vs published` row if compared) then the published rows.

    Index: model name / `<model> Δ` / published row key; columns: row, method, model, the 8 benchmarks (percent).
    """
    published = published or load_published()
    metrics = load_metrics(metrics)
    spec, rows = published["main"]["columns"], published["main"]["rows"]
    compare = _check_compare(compare, rows)
    models = _by_model(metrics)
    records, index = [], []
    for model, cols in models.items():
        ours = {c: _pct(cols[c]["value"]) if c in cols else math.nan for c in spec}
        records.append({"row": OURS, "method": "VQAScore", "model": model, **ours})
        index.append(model)
        if model in compare:
            pub = rows[compare[model]]
            delta = {c: round(ours[c] - pub["values"][c], 1) + 0.0 if c in pub["values"] else math.nan for c in spec}
            records.append({"row": DELTA, "method": pub["method"], "model": pub["model"], **delta})
            index.append(f"{model} Δ")
    for key, pub in rows.items():
        records.append({"row": PUBLISHED, "method": pub["method"], "model": pub["model"], **pub["values"]})
        index.append(key)
    df = pd.DataFrame.from_records(records, index=pd.Index(index, name="key"), columns=TEXT_COLUMNS + list(spec))
    metric_groups: dict[str, list[str]] = {}
    for s in spec.values():
        metric_groups.setdefault(s["metric"], []).append(s["label"])
    df.attrs.update(
        caption="Image-text alignment with human judgement, in percent: "
        + "; ".join(f"{m} ({', '.join(labels)})" for m, labels in metric_groups.items())
        + f". Published rows: {published['main']['source']}.",
        notes=_genai_notes(models, metrics),
        labels={c: s["label"] for c, s in spec.items()},
        compare={m: k for m, k in compare.items() if m in models},
    )
    return df


def genai_table(metrics, published: dict | None = None, compare: Mapping[str, str] | None = None) -> pd.DataFrame:
    """GenAI-Bench pairwise accuracy / Pearson / Kendall x100 per model, then GenAI-Bench Table 2 and model zoo rows.

    `compare` maps our models to main-table row keys; a Table 2 row whose `main_row` matches gives a Δ row.
    """
    published = published or load_published()
    metrics = load_metrics(metrics)
    compare = _check_compare(compare, published["main"]["rows"])
    table2 = published["genai_bench"]["rows"]
    by_main = {pub.get("main_row"): pub for pub in table2.values()}
    models = _by_model(metrics)
    records, index = [], []
    for model, cols in models.items():
        if "genai_bench" not in cols:
            continue
        r = cols["genai_bench"]
        ours = {c: math.nan for c in GENAI_COLUMNS} | {f"image_{s}": _pct(r[k]) for s, k in GENAI_STATS.items()}
        records.append({"row": OURS, "method": "VQAScore", "model": model, **ours})
        index.append(model)
        pub = by_main.get(compare.get(model))
        if pub is not None:
            values = {f"{m}_{s}": v for m in ("image", "video") for s, v in pub.get(m, {}).items()}
            delta = {c: round(ours[c] - values[c], 1) + 0.0 if c in values else math.nan for c in GENAI_COLUMNS}
            records.append({"row": DELTA, "method": pub["method"], "model": pub["model"], **delta})
            index.append(f"{model} Δ")
    for key, pub in table2.items():
        values = {f"{m}_{s}": v for m in ("image", "video") for s, v in pub.get(m, {}).items()}
        records.append({"row": PUBLISHED, "method": pub["method"], "model": pub["model"], **values})
        index.append(key)
    main_rows = published["main"]["rows"]
    for key, value in published["model_zoo_video"]["values"].items():
        pub = main_rows[key]
        model = f"{pub['model']} (model zoo)"
        records.append({"row": PUBLISHED, "method": pub["method"], "model": model, "video_pairwise": value})
        index.append(f"{key}-zoo-video")
    df = pd.DataFrame.from_records(records, index=pd.Index(index, name="key"), columns=TEXT_COLUMNS + GENAI_COLUMNS)
    df.attrs.update(
        caption="GenAI-Bench agreement with human ratings (x100): pairwise accuracy with tie calibration, Pearson, "
        f"Kendall tau-b. Published rows: {published['genai_bench']['source']}; "
        f"{published['model_zoo_video']['source']}.",
        notes=_genai_notes({m: c for m, c in models.items() if "genai_bench" in c}, metrics),
        labels=GENAI_LABELS,
        compare={m: k for m, k in compare.items() if m in models},
    )
    return df


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    with atomic_path(path) as tmp:
        write(tmp)
    return path


def _cells(df: pd.DataFrame) -> list[list[str]]:
    rows = []
    for _, r in df.iterrows():
        fmt = "{:+.1f}" if r["row"] == DELTA else "{:.1f}"
        rows.append([str(r[c]) if c in TEXT_COLUMNS else ("" if pd.isna(r[c]) else fmt.format(r[c])) for c in df])
    return rows


def _markdown(df: pd.DataFrame) -> str:
    labels = df.attrs.get("labels", {})
    head = [labels.get(c, c) for c in df.columns]
    align = ["---" if c in TEXT_COLUMNS else "---:" for c in df.columns]
    lines = [f"**{df.attrs.get('caption', '')}**", ""] if df.attrs.get("caption") else []
    for cells in [head, align, *_cells(df)]:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    notes = df.attrs.get("notes", [])
    return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else [])) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}"}
_TEX |= {"~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "Δ": r"$\Delta$"}


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def _latex(df: pd.DataFrame) -> str:
    labels, n = df.attrs.get("labels", {}), len(df.columns)
    spec = "".join("l" if c in TEXT_COLUMNS else "r" for c in df.columns)
    lines = [f"% {tex_escape(df.attrs['caption'])}"] if df.attrs.get("caption") else []
    lines += [f"\\begin{{tabular}}{{{spec}}}", r"\toprule"]
    lines.append(" & ".join(tex_escape(labels.get(c, c)) for c in df.columns) + r" \\")
    lines.append(r"\midrule")
    previous = None
    for kind, cells in zip(df["row"], _cells(df), strict=True):
        if previous not in (None, PUBLISHED) and kind == PUBLISHED:
            lines.append(r"\midrule")
        lines.append(" & ".join(tex_escape(c) for c in cells) + r" \\")
        previous = kind
    lines.append(r"\bottomrule")
    lines += [
        f"\\multicolumn{{{n}}}{{l}}{{\\footnotesize {tex_escape(note)}}} \\\\" for note in df.attrs.get("notes", [])
    ]
    return "\n".join(lines + [r"\end{tabular}"]) + "\n"


def write_tables(df: pd.DataFrame, out_stem: str | os.PathLike) -> list[Path]:
    """`<stem>.csv` (numbers unformatted, index `key`), `<stem>.md` (caption line, notes), `<stem>.tex` (booktabs)."""
    stem = Path(out_stem)
    return [
        _atomic(stem.with_name(stem.name + ".csv"), lambda p: df.to_csv(p, float_format="%.1f")),
        _atomic(stem.with_name(stem.name + ".md"), lambda p: p.write_text(_markdown(df), encoding="utf-8")),
        _atomic(stem.with_name(stem.name + ".tex"), lambda p: p.write_text(_latex(df), encoding="utf-8")),
    ]


def plot_main(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Grouped bars per benchmark: our models and the published rows they are compared with (or, with no
    comparison, the published VQAScore rows)."""
    plt = pyplot()
    keys = list(df.index[df["row"] == OURS])
    compared = [k for k in dict.fromkeys(df.attrs.get("compare", {}).values()) if k in df.index]
    keys += compared or list(df.index[(df["row"] == PUBLISHED) & (df["method"] == "VQAScore")])
    columns = [c for c in df.columns if c not in TEXT_COLUMNS]
    labels = df.attrs.get("labels", {})
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(columns)), 4.5))
    width = 0.8 / max(len(keys), 1)
    for i, key in enumerate(keys):
        row = df.loc[key]
        name = f"{row['model']} (ours)" if row["row"] == OURS else f"{row['method']} {row['model']} (published)"
        xs = [j + (i - (len(keys) - 1) / 2) * width for j in range(len(columns))]
        ax.bar(xs, [row[c] for c in columns], width, label=name, hatch="" if row["row"] == OURS else "//")
    ax.set_xticks(range(len(columns)), [labels.get(c, c) for c in columns])
    ax.set_ylabel("percent")
    ax.set_ylim(0, 100)
    ax.legend(fontsize="small", ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    ax.set_title("Ours vs published")
    return savefig(fig, path)


def build_tables(
    metrics_paths: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    compare: Mapping[str, str] | None = None,
    published: dict | None = None,
) -> list[Path]:
    """Write main.{csv,md,tex}, genai_bench.{csv,md,tex} and main.png under out_dir; return the paths."""
    out, published = Path(out_dir), published or load_published()
    metrics = load_metrics(metrics_paths)
    main = main_table(metrics, published, compare)
    genai = genai_table(metrics, published, compare)
    return [
        *write_tables(main, out / "main"),
        *write_tables(genai, out / "genai_bench"),
        plot_main(main, out / "main.png"),
    ]
