"""Speaker clustering of window embeddings, in numpy (runs in the ingress or the tracker).

Average-linkage agglomerative clustering on cosine similarity. Without a speaker count the
merging stops when the two closest clusters are less similar than `threshold`; `num_speakers`
fixes the count, `min_speakers`/`max_speakers` bound it. Tiny clusters (windows straddling a
turn change) are folded into their nearest big cluster unless a count forces them to stay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpeakerCount:
    """What the caller said about the number of speakers (all optional)."""

    exact: int | None = None
    minimum: int | None = None
    maximum: int | None = None

    def bounds(self, n_items: int, ceiling: int) -> tuple[int, int]:
        if self.exact is not None:
            n = min(self.exact, n_items)
            return n, n
        low = self.minimum or 1
        high = min(self.maximum or ceiling, ceiling)
        return min(low, n_items), max(min(high, n_items), min(low, n_items))


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = x / np.maximum(norms, 1e-12)
    return out


def centre(embeddings: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Remove what all windows of the recording share (channel, synthesiser): the embeddings
    of a GE2E encoder all lie in the positive orthant, so raw cosines are close together."""
    m = embeddings.mean(axis=0) if mean is None else mean
    return _normalise(embeddings - m)


def agglomerate(
    embeddings: np.ndarray,
    count: SpeakerCount,
    threshold: float,
    ceiling: int = 8,
    min_cluster_fraction: float = 0.05,
) -> np.ndarray:
    """Cluster labels 0..k-1 per row (numbered by first appearance)."""
    n = embeddings.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    low, high = count.bounds(n, ceiling)
    x = _normalise(embeddings.astype(np.float64))
    sim = x @ x.T
    sizes = np.ones(n)
    active = np.ones(n, bool)
    members: list[list[int]] = [[i] for i in range(n)]
    np.fill_diagonal(sim, -np.inf)
    clusters = n
    while clusters > low:
        masked = np.where(active[:, None] & active[None, :], sim, -np.inf)
        flat = int(np.argmax(masked))
        a, b = divmod(flat, n)
        best = masked[a, b]
        if clusters <= high and best < threshold:
            break
        # Average linkage: the merged row is the size-weighted mean of the two rows.
        merged = (sim[a] * sizes[a] + sim[b] * sizes[b]) / (sizes[a] + sizes[b])
        sim[a, :] = merged
        sim[:, a] = merged
        sim[a, a] = -np.inf
        sizes[a] += sizes[b]
        active[b] = False
        sim[b, :] = -np.inf
        sim[:, b] = -np.inf
        members[a].extend(members[b])
        members[b] = []
        clusters -= 1
    groups = [members[i] for i in range(n) if active[i]]
    if count.exact is None:
        groups = _fold_small(groups, x, n, low, min_cluster_fraction)
    labels = np.empty(n, np.int64)
    for k, group in enumerate(groups):
        labels[group] = k
    return _renumber(labels)


def _fold_small(
    groups: list[list[int]], x: np.ndarray, n: int, low: int, fraction: float
) -> list[list[int]]:
    small = [g for g in groups if len(g) < max(2, fraction * n)]
    big = [g for g in groups if g not in small]
    if not big or len(big) < low:
        return groups
    centroids = _normalise(np.stack([x[g].mean(axis=0) for g in big]))
    for group in small:
        for i in group:
            big[int(np.argmax(centroids @ x[i]))].append(i)
    return big


def _renumber(labels: np.ndarray) -> np.ndarray:
    order: dict[int, int] = {}
    for label in labels.tolist():
        order.setdefault(label, len(order))
    return np.array([order[label] for label in labels.tolist()], np.int64)


def merge_same_voice(raw: np.ndarray, labels: np.ndarray, max_gap: float, low: int) -> np.ndarray:
    """Merge clusters that are one voice, judged on the *uncentred* embeddings.

    Centring makes a lone speaker's windows look unrelated (only noise is left), so the
    count is checked on raw cosines: two clusters whose mean similarity across is within
    `max_gap` of their mean similarity inside are one voice. On espeak-ng voices and GE2E
    windows, halves of one voice measure gaps of 0.02-0.24 before merging (small, noisy
    clusters), two voices 0.20-0.36; merging the closest pair first and measuring again
    lets one voice's clusters grow together before the cross-voice gaps are looked at.
    """
    x = _normalise(raw.astype(np.float64))
    sim = x @ x.T
    labels = labels.copy()
    while labels.size and int(labels.max()) + 1 > max(low, 1):
        groups = [np.flatnonzero(labels == k) for k in range(int(labels.max()) + 1)]
        best, pair = np.inf, (0, 0)
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                gap = _gap(sim, groups[a], groups[b])
                if gap < best:
                    best, pair = gap, (a, b)
        if best > max_gap:
            break
        labels[labels == pair[1]] = pair[0]
        labels = _renumber(labels)
    return labels


def _gap(sim: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    inside = [sim[np.ix_(g, g)][~np.eye(g.size, dtype=bool)] for g in (a, b) if g.size > 1]
    across = float(sim[np.ix_(a, b)].mean())
    if not inside:
        return 1.0 - across  # two lone windows: compare with a perfect match
    return float(np.concatenate(inside).mean()) - across


def centroids(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    k = int(labels.max()) + 1 if labels.size else 0
    return _normalise(np.stack([embeddings[labels == i].mean(axis=0) for i in range(k)]))


def match_known(
    cluster_centroids: np.ndarray, references: np.ndarray, min_similarity: float
) -> dict[int, int]:
    """Cluster index -> reference index, one-to-one, most similar pairs first."""
    if cluster_centroids.size == 0 or references.size == 0:
        return {}
    sim = cluster_centroids @ references.T
    out: dict[int, int] = {}
    used: set[int] = set()
    for flat in np.argsort(-sim, axis=None):
        c, r = divmod(int(flat), sim.shape[1])
        if c in out or r in used or sim[c, r] < min_similarity:
            continue
        out[c] = r
        used.add(r)
    return out
