"""Benchmark: the streaming JSON array reader (`clip_flant5.flatten.iter_json_array`) on a synthetic mix665k.

    python benchmarks/json_stream_benchmark.py --tag package                  # 200K records, ~300 MiB
    python benchmarks/json_stream_benchmark.py --tag ijson --ijson yajl2_c --baseline package
    python benchmarks/json_stream_benchmark.py --tag head --pythonpath /tmp/head/src   # another checkout's reader

`--ijson BACKEND` reads with `ijson.items(file, "item", use_float=True)` (pip install ijson) instead of the
package's reader: the candidate that was measured against it (see benchmarks/README.md).

Each repetition reads the whole file in a fresh interpreter that reports its own peak RSS (getrusage
RUSAGE_SELF) and the wall time of the read loop; an interpreter that imports the module and reads nothing gives
the RSS baseline, so "reader RSS" is what reading adds. Runs are best-of-N (the machine may be shared). The
records are the LLaVA-1.5 mix665k shapes of `flatten_benchmark.py` (same generator, fixed seed). Results go to
benchmarks/results/json_stream_benchmark_<tag>.json (numbers) and .txt (what was printed, with the command);
the generated input goes to benchmarks/out/json_stream/ and is deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from flatten_benchmark import generate  # noqa: E402 (a sibling script, not a package)


def ijson_reader(backend: str, buf_size: int):
    import ijson

    items = ijson.get_backend(backend).items

    def read(path):
        with open(path, "rb") as file:
            yield from items(file, "item", use_float=True, buf_size=buf_size)

    return read


def child(path: str, read: bool, backend: str | None, buf_size: int) -> None:
    if backend:
        iter_json_array = ijson_reader(backend, buf_size)
    else:
        from clip_flant5.flatten import iter_json_array

    n, start = 0, time.perf_counter()
    if read:
        for _ in iter_json_array(path):
            n += 1
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"records": n, "seconds": seconds, "peak_rss_mib": rss}))


def run_child(path: Path, read: bool, args) -> dict:
    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (args.pythonpath, env.get("PYTHONPATH")) if p)
    argv = [sys.executable, __file__, "--child", str(path), "read" if read else "import"]
    if args.ijson:
        argv += ["--ijson", args.ijson, "--buf-size", str(args.buf_size)]
    done = subprocess.run(argv, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tag", help="name of this run's results (e.g. package, ijson_yajl2_c)")
    parser.add_argument("--baseline", help="tag of an earlier run to print ratios against")
    parser.add_argument("--pythonpath", help="put this folder first on the reader's PYTHONPATH (another checkout)")
    parser.add_argument("--ijson", metavar="BACKEND", help="read with ijson's BACKEND (yajl2_c, python) instead")
    parser.add_argument("--buf-size", type=int, default=64 << 10, help="ijson's read size (its default: 64 KiB)")
    parser.add_argument("--ascii", action="store_true", help="non-ASCII text as \\u escapes (json.dump's default)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files for the next run")
    parser.add_argument("--workdir", type=Path, default=HERE / "out" / "json_stream")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1] == "read", args.ijson, args.buf_size)
        return
    if not args.tag:
        parser.error("--tag is required")

    args.workdir.mkdir(parents=True, exist_ok=True)
    src = args.workdir / f"mix_{args.records}.json"
    generated = [src]
    if not src.exists():  # fixed seed: every run reads the same bytes (--keep skips generating them again)
        generate(src, args.records)
    if args.ascii:
        raw, src = src, args.workdir / f"mix_{args.records}_ascii.json"
        generated.append(src)
        if not src.exists():
            with open(raw, encoding="utf-8") as fin, open(src, "w", encoding="ascii") as fout:
                for line in fin:  # one record per line after "[", escaped as json.dump writes by default
                    body = line.rstrip("\n")
                    record = body.lstrip(",")
                    if record.startswith("{"):
                        body = body[: len(body) - len(record)] + json.dumps(json.loads(record))
                    fout.write(body + "\n")
    lines = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    size = src.stat().st_size
    escaped = ", non-ASCII as \\u escapes" if args.ascii else ""
    say(f"input: {args.records} synthetic mix665k records{escaped}, {size / 2**20:.0f} MiB")
    say(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}")
    base_rss = min(run_child(src, False, args)["peak_rss_mib"] for _ in range(2))
    runs = [run_child(src, True, args) for _ in range(args.repeat)]
    if {r["records"] for r in runs} != {args.records}:
        raise SystemExit(f"the reader returned {[r['records'] for r in runs]} records, not {args.records}")
    seconds = sorted(r["seconds"] for r in runs)
    result = {
        "tag": args.tag,
        "records": args.records,
        "bytes": size,
        "best_s": seconds[0],
        "median_s": seconds[len(seconds) // 2],
        "records_per_s": args.records / seconds[0],
        "mib_per_s": size / 2**20 / seconds[0],
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "reader_rss_mib": max(r["peak_rss_mib"] for r in runs) - base_rss,
    }
    say(f"{args.tag}: best {result['best_s']:.2f} s (median {result['median_s']:.2f} s of {args.repeat}), "
        f"{result['records_per_s']:,.0f} records/s, {result['mib_per_s']:.1f} MiB/s; peak RSS "
        f"{result['peak_rss_mib']:.0f} MiB ({result['reader_rss_mib']:.1f} MiB above the bare import)")  # fmt: skip
    results = HERE / "results"
    if args.baseline:
        old = json.loads((results / f"json_stream_benchmark_{args.baseline}.json").read_text())
        say(f"against {args.baseline}: records/s x{result['records_per_s'] / old['records_per_s']:.2f}, "
            f"peak RSS x{result['peak_rss_mib'] / old['peak_rss_mib']:.2f} "
            f"(reader's own {result['reader_rss_mib']:.1f} vs {old['reader_rss_mib']:.1f} MiB)")  # fmt: skip
    results.mkdir(exist_ok=True)
    command = "python benchmarks/json_stream_benchmark.py " + " ".join(sys.argv[1:])
    outputs = {
        f"json_stream_benchmark_{args.tag}.json": json.dumps(result, indent=2) + "\n",
        f"json_stream_benchmark_{args.tag}.txt": f"$ {command}\n" + "\n".join(lines) + "\n",
    }
    for name, text in outputs.items():
        tmp = results / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, results / name)  # atomic: a killed run leaves the previous numbers intact
    if not args.keep:
        for path in generated:
            path.unlink()


if __name__ == "__main__":
    main()
