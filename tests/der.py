"""Diarization error rate, frame-based (10 ms), as NIST md-eval / pyannote.metrics define it.

DER = (missed speech + false alarm + speaker confusion) / reference speech, with the
hypothesis speakers mapped one-to-one onto the reference speakers to maximise overlap, and
an optional collar around every reference boundary left out of scoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import permutations

import numpy as np

STEP = 0.01


def _frames(turns: Sequence[tuple[str, float, float]], names: list[str], n: int) -> np.ndarray:
    active = np.zeros((len(names), n), bool)
    for speaker, start, end in turns:
        active[names.index(speaker), round(start / STEP) : round(end / STEP)] = True
    return active


def der(
    reference: Sequence[tuple[str, float, float]],
    hypothesis: Sequence[tuple[str, float, float]],
    collar: float = 0.0,
) -> float:
    ref_names = sorted({t[0] for t in reference})
    hyp_names = sorted({t[0] for t in hypothesis})
    end = max([t[2] for t in reference] + [t[2] for t in hypothesis])
    n = round(end / STEP) + 1
    ref = _frames(reference, ref_names, n)
    hyp = _frames(hypothesis, hyp_names, n)
    scored = np.ones(n, bool)
    half = round(collar / STEP)
    for _, start, stop in reference:
        for t in (start, stop):
            i = round(t / STEP)
            scored[max(0, i - half) : i + half] = False
    ref, hyp = ref[:, scored], hyp[:, scored]
    n_ref, n_hyp = ref.sum(axis=0), hyp.sum(axis=0)
    total = n_ref.sum()
    if total == 0:
        return 0.0
    overlap = ref.astype(np.int64) @ hyp.T.astype(np.int64)  # (ref, hyp) co-active frames
    # The best one-to-one mapping (speaker counts are small: brute force).
    n_r, n_h = len(ref_names), len(hyp_names)
    if n_r <= n_h:
        pairs = ([(r, h) for r, h in enumerate(p)] for p in permutations(range(n_h), n_r))
    else:
        pairs = ([(r, h) for h, r in enumerate(p)] for p in permutations(range(n_r), n_h))
    best = max((sum(overlap[r, h] for r, h in pair) for pair in pairs), default=0)
    miss = np.maximum(n_ref - n_hyp, 0).sum()
    false_alarm = np.maximum(n_hyp - n_ref, 0).sum()
    confusion = np.minimum(n_ref, n_hyp).sum() - best
    return float((miss + false_alarm + confusion) / total)
