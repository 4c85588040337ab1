"""Benchmark: clip_flant5.metrics.pairwise_accuracy against the published tie-calibration procedure.

    python benchmarks/pairwise_accuracy_benchmark.py        # n = 3,162, 6,000 and 9,600; baseline up to 6,000
    python benchmarks/pairwise_accuracy_benchmark.py --sizes 1000 9600 --baseline-max 1000

Synthetic GenAI-Bench-like data (fixed seed): a latent quality per image; human score = mean of 3 Likert ratings
(1-5, skewed high, so many exact ties); metric = a noisy sigmoid of the quality rounded to 3 decimals (some ties).
n = 3,162 is GenAI-Bench-527 (527 prompts x 6 generators), 9,600 the 1,600-prompt set.

The baseline is the procedure of the published implementation (t2v_metrics' copy of mt-metrics-eval
`tau_optimization`), written out here: one Python object per pair with its statistics as a plain and as a
metric-tied pair, the pairs sorted by metric gap, then one sweep that turns pairs into metric ties in that order
and evaluates the accuracy at every candidate epsilon, keeping the first maximum. It holds ~400 bytes per pair, so it
only runs up to --baseline-max items. Accuracy and epsilon of both must be identical (asserted).
Results are printed and written to benchmarks/results/pairwise_accuracy_benchmark.txt.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import shlex
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from clip_flant5.metrics import mean_ratings, pairwise_accuracy

HERE = Path(__file__).resolve().parent


def generate(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    quality = rng.normal(0.0, 1.0, n)
    ratings = np.clip(np.round(4.5 + quality[:, None] + rng.normal(0.0, 0.7, (n, 3))), 1, 5)
    metric = np.round(1.0 / (1.0 + np.exp(-(1.5 * quality + 1.0 + rng.normal(0.0, 1.0, n)))), 3)
    return mean_ratings(ratings), metric


class _Counts:
    """Pair statistics: concordant, discordant, human-only ties, metric-only ties, ties in both."""

    def __init__(self, con=0, dis=0, human=0, metric=0, both=0):
        self.con, self.dis, self.human, self.metric, self.both = con, dis, human, metric, both

    def add(self, other: _Counts, sign: int) -> None:
        self.con += sign * other.con
        self.dis += sign * other.dis
        self.human += sign * other.human
        self.metric += sign * other.metric
        self.both += sign * other.both

    def accuracy(self) -> float:
        return (self.con + self.both) / (self.con + self.dis + self.human + self.metric + self.both)


class _Pair:
    def __init__(self, h1, h2, m1, m2):
        self.diff = abs(m1 - m2)
        if h1 == h2:
            self.plain = _Counts(both=1) if m1 == m2 else _Counts(human=1)
            self.tied = _Counts(both=1)
        else:
            if m1 == m2:
                self.plain = _Counts(metric=1)
            elif (h1 > h2) == (m1 > m2):
                self.plain = _Counts(con=1)
            else:
                self.plain = _Counts(dis=1)
            self.tied = _Counts(metric=1)


def published_style(human, metric) -> tuple[float, float]:
    """The published procedure: enumerate the pairs in Python, sort by gap, sweep over the candidate epsilons."""
    human, metric = np.asarray(human).tolist(), np.asarray(metric).tolist()
    pairs = [
        _Pair(human[i], human[j], metric[i], metric[j]) for i in range(len(human)) for j in range(i + 1, len(human))
    ]
    total = _Counts()
    for pair in pairs:
        total.add(pair.plain, 1)
    thresholds, accuracies = [0.0], [total.accuracy()]
    pairs.sort(key=lambda pair: pair.diff)
    for pair in pairs:
        total.add(pair.plain, -1)
        total.add(pair.tied, 1)
        if thresholds[-1] == pair.diff:
            accuracies[-1] = total.accuracy()
        else:
            thresholds.append(pair.diff)
            accuracies.append(total.accuracy())
    best = int(np.argmax(accuracies))
    return accuracies[best], thresholds[best]


def baseline_run(n: int) -> tuple[tuple[float, float], float, float]:
    """The baseline on generate(n) in this (fresh) process: (result, seconds, peak RSS growth in MiB)."""
    human, metric = generate(n)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    result = published_style(human, metric)
    seconds = time.perf_counter() - start
    return result, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[3162, 6000, 9600])
    parser.add_argument("--baseline-max", type=int, default=6000, help="largest n the baseline runs at")
    parser.add_argument("--repeat", type=int, default=3, help="timings of pairwise_accuracy: best of this many")
    args = parser.parse_args()

    lines = [f"$ python {shlex.join(['benchmarks/pairwise_accuracy_benchmark.py', *sys.argv[1:]])}"]

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    say(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}")
    measured = None  # (seconds, MiB) per pair of the last baseline run, to estimate the ones not run
    for n in args.sizes:
        human, metric = generate(n)
        n_pairs = n * (n - 1) // 2
        levels, counts = np.unique(human, return_counts=True)
        human_ties = int((counts * (counts - 1) // 2).sum())
        say(
            f"\nn = {n:,}: {n_pairs:,} pairs, {levels.size} human levels ({human_ties / n_pairs:.1%} of pairs "
            f"human-tied), {np.unique(metric).size} distinct metric values"
        )
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            ours = pairwise_accuracy(human, metric)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        plain = pairwise_accuracy(human, metric, tie_calibration=False)
        plain_time = time.perf_counter() - start
        tracemalloc.start()
        pairwise_accuracy(human, metric)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        say(f"  pairwise_accuracy: acc {ours[0]:.6f} at epsilon {ours[1]:.6g} (without calibration {plain[0]:.6f})")
        say(f"  pairwise_accuracy: {min(times):.2f} s (best of {args.repeat}), peak traced memory {peak:.0f} MiB;")
        say(f"                     without calibration {plain_time:.2f} s")
        if n > args.baseline_max:
            estimate = (
                f": at the rate measured above ~{n_pairs * measured[0]:.0f} s, ~{n_pairs * measured[1] / 1024:.1f} GiB"
            )
            say(f"  published-style baseline: not run (n > --baseline-max){estimate if measured else ''}")
            continue
        with multiprocessing.get_context("spawn").Pool(1) as pool:  # a fresh process: its own peak RSS
            theirs, baseline_time, rss_growth = pool.apply(baseline_run, (n,))
        assert theirs == ours, (theirs, ours)
        measured = (baseline_time / n_pairs, rss_growth / n_pairs)
        say(f"  published-style baseline: {baseline_time:.1f} s, peak RSS +{rss_growth:.0f} MiB; identical: {theirs}")
        say(f"  speed-up: {baseline_time / min(times):.0f}x")

    out = HERE / "results" / "pairwise_accuracy_benchmark.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
