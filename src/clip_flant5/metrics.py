"""The metrics of the VQAScore paper tables (spec: scoring.md "Metrics, exactly"), as fractions (not x100).

- `winoground_scores`: Winoground / EqBen text, image and group scores (strict `>`).
- `binary_accuracy`: Pick-a-Pic (ties go to image 0).
- `auroc`: SeeTRUE subsets (sklearn `roc_auc_score`).
- `pearson`, `kendall_tau_b`: GenAI-Bench correlations over all images (scipy).
- `pairwise_accuracy`: TIFA160 / GenAI-Bench pairwise accuracy with tie calibration (Deutsch, Foster & Freitag,
  EMNLP 2023), exact and vectorised; `mean_ratings` gives the human score of each image.

`METRICS` maps a metric name to a function returning that one number.

Pairwise accuracy: over the pairs i < j, acc(eps) = (#concordant pairs with metric gap |m_i - m_j| > eps + #pairs
tied in the human score with gap <= eps) / #pairs = (#concordant + gain(eps)) / #pairs with gain(eps) = #human-tied
minus #concordant pairs with gap <= eps, maximised over eps in {0} and the observed gaps (the smallest maximiser is
reported). gain only rises at gaps of human-tied pairs, so the best eps is 0 or one of those: we sort the gaps of the
human-tied and of the concordant pairs and read gain at every human-tied gap with one searchsorted. The pairs are
generated in blocks of rows with the items sorted by metric, so that gap = m_j - m_i, exactly the float
|m_i - m_j| of the definition. Time O(n^2) in numpy (under a second for 9,600 items), memory 8 bytes per
human-tied or concordant pair (at most 8 n(n-1)/2 bytes: 370 MB at n = 9,600) plus a block of temporaries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
from scipy.stats import kendalltau, pearsonr
from sklearn.metrics import roc_auc_score

BLOCK_PAIRS = 1 << 21  # pairs evaluated per numpy block (~2M: a few tens of MB of temporaries)


def _values(name: str, values) -> np.ndarray:
    """A 1-D float64 array of finite values."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.isfinite(array).all():
        bad = np.flatnonzero(~np.isfinite(array))
        raise ValueError(f"{name} has {bad.size} non-finite value(s) (NaN or inf), first at index {bad[0]}")
    return array


def _paired(minimum: int = 1, **named) -> list[np.ndarray]:
    """The named inputs as finite float64 vectors of one common length, at least `minimum`."""
    arrays = {name: _values(name, values) for name, values in named.items()}
    lengths = {name: array.size for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError("lengths differ: " + ", ".join(f"{name} has {n}" for name, n in lengths.items()))
    n = next(iter(lengths.values()))
    if n < minimum:
        raise ValueError(f"need at least {minimum} item(s), got {n}")
    return list(arrays.values())


def mean_ratings(ratings: Sequence[Sequence[float]]) -> np.ndarray:
    """Human score of each image: the mean of its ratings (lists may differ in length)."""
    means = []
    for index, image_ratings in enumerate(ratings):
        values = _values(f"ratings[{index}]", image_ratings)
        if values.size == 0:
            raise ValueError(f"ratings[{index}] is empty")
        means.append(values.mean())
    return np.array(means, dtype=np.float64)


def winoground_scores(scores) -> dict[str, float]:
    """Text, image and group scores of [items, 2 images, 2 texts] scores (s[i][0][1]: image 0 with text 1)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 3 or s.shape[1:] != (2, 2) or s.shape[0] == 0:
        raise ValueError(f"scores must have shape [items >= 1, 2 images, 2 texts], got {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores has non-finite value(s) (NaN or inf)")
    s00, s01, s10, s11 = s[:, 0, 0], s[:, 0, 1], s[:, 1, 0], s[:, 1, 1]
    text = (s00 > s01) & (s11 > s10)
    image = (s00 > s10) & (s11 > s01)
    return {"text": float(text.mean()), "image": float(image.mean()), "group": float((text & image).mean())}


def binary_accuracy(label_0, score_0, score_1) -> float:
    """Pick-a-Pic: the preferred image is image 0 where label_0 == 1 (the dataset's `label_0` column), else image 1;
    the prediction is image 0 where score_0 >= score_1 (ties go to image 0)."""
    label_0, score_0, score_1 = _paired(label_0=label_0, score_0=score_0, score_1=score_1)
    return float(((label_0 == 1) == (score_0 >= score_1)).mean())


def auroc(labels, scores) -> float:
    """Area under the ROC curve, sklearn `roc_auc_score` semantics (NaN with a warning if one class only)."""
    labels, scores = _paired(labels=labels, scores=scores)
    return float(roc_auc_score(labels, scores))


def pearson(human, metric) -> float:
    """Pearson correlation over all items (scipy; NaN with a warning if an input is constant)."""
    human, metric = _paired(2, human=human, metric=metric)
    return float(pearsonr(human, metric).statistic)


def kendall_tau_b(human, metric) -> float:
    """Kendall tau-b over all items (scipy; NaN if an input is constant)."""
    human, metric = _paired(2, human=human, metric=metric)
    return float(kendalltau(human, metric, variant="b").statistic)


def _pair_blocks(human: np.ndarray, metric: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yields (gap, human_tied, concordant) for the pairs i < j, a block of rows at a time. Items come sorted by
    metric, so gap = m_j - m_i is exactly |m_i - m_j| and the pair is concordant iff h_j > h_i and gap > 0."""
    n = metric.size
    step = max(1, BLOCK_PAIRS // n)
    for start in range(0, n, step):
        stop = min(start + step, n)
        h_i, m_i = human[start:stop, None], metric[start:stop, None]
        inside = np.triu(np.ones((stop - start, stop - start), dtype=bool), k=1)  # pairs within the block
        for columns, keep in ((slice(start, stop), inside), (slice(stop, n), None)):
            gap, h_j = metric[columns] - m_i, human[columns]
            tied, concordant = h_j == h_i, (h_j > h_i) & (gap > 0)
            if keep is not None:
                gap, tied, concordant = gap[keep], tied[keep], concordant[keep]
            yield gap, tied, concordant


def pairwise_accuracy(human, metric, tie_calibration: bool = True) -> tuple[float, float]:
    """Pairwise accuracy (accuracy, epsilon) of Deutsch, Foster & Freitag (2023) over all pairs of items.

    Human ties are exact equality; metric ties are |m_i - m_j| <= epsilon. With tie calibration epsilon is the
    smallest of {0} and the observed gaps that maximises the accuracy; without, epsilon = 0.
    """
    human, metric = _paired(2, human=human, metric=metric)
    order = np.argsort(metric, kind="stable")
    human, metric = human[order], metric[order]
    n_pairs = metric.size * (metric.size - 1) // 2

    # acc(eps) = (n_concordant + gain(eps)) / n_pairs, gain(eps) = #human-tied - #concordant pairs with gap <= eps.
    n_tied = n_concordant = best_gain = 0
    for gap, tied, concordant in _pair_blocks(human, metric):
        n_tied += int(np.count_nonzero(tied))
        n_concordant += int(np.count_nonzero(concordant))
        best_gain += int(np.count_nonzero(tied & (gap == 0)))  # gain(0): concordant gaps are > 0
    best_eps = 0.0
    if tie_calibration:
        tied_gaps, concordant_gaps = np.empty(n_tied), np.empty(n_concordant)
        n_tied = n_concordant = 0
        for gap, tied, concordant in _pair_blocks(human, metric):
            new_tied, new_concordant = gap[tied], gap[concordant]
            tied_gaps[n_tied : n_tied + new_tied.size] = new_tied
            concordant_gaps[n_concordant : n_concordant + new_concordant.size] = new_concordant
            n_tied, n_concordant = n_tied + new_tied.size, n_concordant + new_concordant.size
        tied_gaps.sort()
        concordant_gaps.sort()
        # gain at the k-th smallest tied gap u (0-based): k + 1 - #concordant gaps <= u. It is exact at the last
        # of equal gaps and lower before, so the first maximum over k is at the smallest maximising epsilon.
        for start in range(0, tied_gaps.size, BLOCK_PAIRS):
            u = tied_gaps[start : start + BLOCK_PAIRS]
            gain = np.arange(start + 1, start + u.size + 1) - np.searchsorted(concordant_gaps, u, side="right")
            k = int(np.argmax(gain))
            if gain[k] > best_gain:
                best_gain, best_eps = int(gain[k]), float(u[k])
    return (n_concordant + best_gain) / n_pairs, best_eps


def group_score(scores) -> float:
    """Winoground / EqBen group score."""
    return winoground_scores(scores)["group"]


def pairwise_accuracy_calibrated(human, metric) -> float:
    """Pairwise accuracy with tie calibration, the number of the paper tables."""
    return pairwise_accuracy(human, metric)[0]


# Metric name -> function returning the table number (a fraction).
METRICS: dict[str, Callable[..., float]] = {
    "group": group_score,
    "binary_accuracy": binary_accuracy,
    "auroc": auroc,
    "pairwise_accuracy": pairwise_accuracy_calibrated,
    "pearson": pearson,
    "kendall_tau_b": kendall_tau_b,
}
