"""Tests for clip_flant5.metrics: brute-force definitions on random data with ties, hand-worked examples, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clip_flant5 import metrics
from clip_flant5.metrics import (
    METRICS,
    auroc,
    binary_accuracy,
    kendall_tau_b,
    mean_ratings,
    pairwise_accuracy,
    pearson,
    winoground_scores,
)

# ---- brute-force definitions (spec scoring.md "Metrics, exactly"), plain Python loops over pairs ----


def pairs(values):
    return [(i, j) for i in range(len(values)) for j in range(i + 1, len(values))]


def brute_pairwise(human, metric, tie_calibration=True):
    """acc(eps) = (concordant pairs with |dm| > eps + human-tied pairs with |dm| <= eps) / pairs, maximised over
    eps in {0} and every observed |dm|, the smallest maximiser kept; O(n^2) per epsilon."""
    human, metric = [float(v) for v in human], [float(v) for v in metric]
    all_pairs = pairs(human)
    candidates = sorted({0.0} | {abs(metric[i] - metric[j]) for i, j in all_pairs}) if tie_calibration else [0.0]
    best = None
    for eps in candidates:
        correct = 0
        for i, j in all_pairs:
            dh, dm = human[i] - human[j], metric[i] - metric[j]
            metric_tied = abs(dm) <= eps
            if dh == 0 and metric_tied:
                correct += 1
            elif not metric_tied and ((dh > 0 and dm > 0) or (dh < 0 and dm < 0)):
                correct += 1
        if best is None or correct > best[0]:
            best = (correct, eps)
    return best[0] / len(all_pairs), best[1]


def brute_winoground(scores):
    text = image = group = 0
    for s in scores:
        t = s[0][0] > s[0][1] and s[1][1] > s[1][0]
        i = s[0][0] > s[1][0] and s[1][1] > s[0][1]
        text, image, group = text + t, image + i, group + (t and i)
    return {"text": text / len(scores), "image": image / len(scores), "group": group / len(scores)}


def brute_auroc(labels, scores):
    """Mann-Whitney: P(score of a positive > score of a negative), ties counting one half."""
    positives = [s for label, s in zip(labels, scores, strict=True) if label == 1]
    negatives = [s for label, s in zip(labels, scores, strict=True) if label != 1]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in positives for q in negatives)
    return wins / (len(positives) * len(negatives))


def brute_pearson(x, y):
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def brute_tau_b(x, y):
    con = dis = tied_x = tied_y = 0
    for i, j in pairs(x):
        dx, dy = x[i] - x[j], y[i] - y[j]
        tied_x += dx == 0
        tied_y += dy == 0
        con += dx * dy > 0
        dis += dx * dy < 0
    n = len(x) * (len(x) - 1) // 2
    return (con - dis) / math.sqrt((n - tied_x) * (n - tied_y))


# ---- random data with ties ----


def random_case(seed: int):
    """Human: means of 1-3 Likert ratings or small integers; metric: integers, 1-2 decimals (float gaps such as
    0.3 - 0.2 != 0.2 - 0.1) or continuous; n up to 60 where the candidates are few, 30 otherwise."""
    rng = np.random.default_rng(seed)
    kind = seed % 4
    n = int(rng.integers(2, 61 if kind < 2 else 31))
    if seed % 3 == 0:
        human = rng.integers(1, 6, (n, int(rng.integers(1, 4)))).mean(axis=1)
    else:
        human = rng.integers(0, int(rng.integers(1, 5)), n).astype(float)
    quality = human + rng.normal(0, 1.5, n)
    metric = [np.round(quality), np.round(quality / 10, 1), np.round(quality / 5, 2), quality][kind]
    return human, metric


@pytest.mark.parametrize("block_pairs", [1, 7, metrics.BLOCK_PAIRS])
def test_pairwise_accuracy_equals_brute_force(monkeypatch, block_pairs):
    monkeypatch.setattr(metrics, "BLOCK_PAIRS", block_pairs)  # 1 and 7: many row blocks of odd sizes
    for seed in range(120 if block_pairs == metrics.BLOCK_PAIRS else 30):
        human, metric = random_case(seed)
        for calibrated in (True, False):
            assert pairwise_accuracy(human, metric, calibrated) == brute_pairwise(human, metric, calibrated), seed


def test_pairwise_accuracy_order_and_input_types():
    human, metric = random_case(5)
    expected = pairwise_accuracy(human, metric)
    order = np.random.default_rng(0).permutation(len(human))
    assert pairwise_accuracy(human[order], metric[order]) == expected
    assert pairwise_accuracy(human.tolist(), metric.tolist()) == expected


# ---- hand-worked examples ----


def test_pairwise_accuracy_hand_worked_with_human_ties():
    # Pairs (metric gap): human ties 0-1 (0.125) and 2-3 (0.5); discordant 3-4 (0.25); concordant 0-2 (0.5),
    # 0-3 (1), 0-4 (0.75), 1-2 (0.375), 1-3 (0.875), 1-4 (0.625), 2-4 (0.25).
    # eps 0: 7/10. eps 0.125: + tie 0-1 -> 8/10. eps 0.25: - concordant 2-4 -> 7/10; larger eps lose more.
    human = [1, 1, 2, 2, 3]
    metric = [0.5, 0.625, 1.0, 1.5, 1.25]
    assert pairwise_accuracy(human, metric) == (0.8, 0.125)
    assert pairwise_accuracy(human, metric, tie_calibration=False) == (0.7, 0.0)


def test_pairwise_accuracy_hand_worked_without_human_ties():
    # 0-1 and 0-2 concordant, 1-2 discordant; with no human ties, metric ties only lose: 2/3 at eps 0.
    assert pairwise_accuracy([1, 2, 3], [0.1, 0.3, 0.2]) == (2 / 3, 0.0)


def test_pairwise_accuracy_constant_human():
    # Every pair is a human tie; gaps 1, 3, 2: eps 1 -> 1/3, eps 2 -> 2/3, eps 3 -> 3/3.
    assert pairwise_accuracy([4, 4, 4], [1, 2, 4]) == (1.0, 3.0)
    assert pairwise_accuracy([4, 4, 4], [1, 2, 4], tie_calibration=False) == (0.0, 0.0)


def test_pairwise_accuracy_ties_everywhere_and_constant_metric():
    assert pairwise_accuracy([2, 2, 2], [1, 1, 1]) == (1.0, 0.0)
    assert pairwise_accuracy([1, 2, 3], [5, 5, 5]) == (0.0, 0.0)
    assert pairwise_accuracy([1, 2], [0.3, 0.7]) == (1.0, 0.0)


def test_winoground_hand_worked():
    scores = [
        [[0.9, 0.1], [0.2, 0.8]],  # text and image correct
        [[0.9, 0.8], [0.95, 0.85]],  # neither: s11 < s10 and s00 < s10
        [[0.5, 0.5], [0.1, 0.9]],  # s00 == s01: not text correct (strict >); image correct
    ]
    assert winoground_scores(scores) == {"text": 1 / 3, "image": 2 / 3, "group": 1 / 3}
    assert METRICS["group"](scores) == 1 / 3


def test_winoground_random_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(50):
        scores = rng.integers(0, 3, (int(rng.integers(1, 40)), 2, 2)).astype(float)
        assert winoground_scores(scores) == brute_winoground(scores.tolist())


def test_binary_accuracy_hand_worked():
    label_0 = [1, 0, 1, 0.5, 0]  # preferred image: 0, 1, 0, 1 (label_0 != 1), 1
    score_0 = [0.7, 0.7, 0.4, 0.2, 0.1]
    score_1 = [0.3, 0.7, 0.6, 0.2, 0.9]  # predicted: 0, 0 (tie), 1, 0 (tie), 1
    assert binary_accuracy(label_0, score_0, score_1) == 2 / 5


def test_binary_accuracy_random_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(1, 50))
        label_0, s0, s1 = rng.choice([0, 0.5, 1], n), rng.integers(0, 3, n), rng.integers(0, 3, n)
        correct = sum((lab == 1) == (a >= b) for lab, a, b in zip(label_0, s0, s1, strict=True))
        assert binary_accuracy(label_0, s0, s1) == correct / n


def test_auroc_equals_mann_whitney():
    rng = np.random.default_rng(2)
    for _ in range(50):
        n = int(rng.integers(2, 60))
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        scores = np.round(rng.random(n) + 0.3 * labels, 1)
        assert auroc(labels, scores) == pytest.approx(brute_auroc(labels.tolist(), scores.tolist()), abs=1e-12)
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75


def test_correlations_equal_textbook_formulas():
    for seed in range(40):
        human, metric = random_case(seed)
        if len(set(human)) < 2 or len(set(metric)) < 2:
            continue
        assert pearson(human, metric) == pytest.approx(brute_pearson(list(human), list(metric)), abs=1e-12)
        assert kendall_tau_b(human, metric) == pytest.approx(brute_tau_b(list(human), list(metric)), abs=1e-12)
    assert kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)


def test_correlations_of_a_constant_are_nan():
    with pytest.warns(Warning):
        assert math.isnan(pearson([1, 2, 3], [5, 5, 5]))
    assert math.isnan(kendall_tau_b([1, 2, 3], [5, 5, 5]))


def test_mean_ratings():
    assert mean_ratings([[1, 2, 3], [4], [5, 5, 4]]).tolist() == [2.0, 4.0, 14 / 3]
    with pytest.raises(ValueError, match=r"ratings\[1\] is empty"):
        mean_ratings([[1], []])


def test_registry():
    assert set(METRICS) == {"group", "binary_accuracy", "auroc", "pairwise_accuracy", "pearson", "kendall_tau_b"}
    assert METRICS["pairwise_accuracy"]([1, 1, 2, 2, 3], [0.5, 0.625, 1.0, 1.5, 1.25]) == 0.8


# ---- validation ----


@pytest.mark.parametrize("function", [pairwise_accuracy, pearson, kendall_tau_b, auroc])
def test_length_mismatch_names_both_lengths(function):
    with pytest.raises(ValueError, match=r"has 3.*has 2"):
        function([0, 1, 1], [0.1, 0.2])


@pytest.mark.parametrize("function", [pairwise_accuracy, pearson, kendall_tau_b, auroc])
def test_nan_is_rejected(function):
    with pytest.raises(ValueError, match="NaN"):
        function([0, 1, 1], [0.1, float("nan"), 0.3])


@pytest.mark.parametrize("function", [pairwise_accuracy, pearson, kendall_tau_b])
def test_fewer_than_two_items(function):
    for n in (0, 1):
        with pytest.raises(ValueError, match="at least 2"):
            function([1.0] * n, [0.5] * n)


def test_other_validation():
    with pytest.raises(ValueError, match="score_1 has 1"):
        binary_accuracy([1, 0], [0.1, 0.2], [0.3])
    with pytest.raises(ValueError, match="NaN"):
        binary_accuracy([1], [float("nan")], [0.3])
    with pytest.raises(ValueError, match="shape"):
        winoground_scores(np.zeros((3, 2, 3)))
    with pytest.raises(ValueError, match="shape"):
        winoground_scores(np.zeros((0, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        winoground_scores([[[0.1, float("nan")], [0.2, 0.3]]])
    with pytest.raises(ValueError, match="one-dimensional"):
        pairwise_accuracy([[1, 2]], [[1, 2]])
