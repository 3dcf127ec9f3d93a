"""Accuracy of transcripts against the words each clip was spoken from: WER and word errors."""

from __future__ import annotations

import re

from benchmarks.clips import Clip


def normalise(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces: the form WER is computed on."""
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]", " ", text.lower())).strip()


def wer(texts: dict[str, str], clips: list[Clip]) -> float | None:
    """Word error rate of `texts` against the words each clip was spoken from."""
    import jiwer

    pairs = [(normalise(c.reference), normalise(texts[c.name])) for c in clips if c.name in texts]
    pairs = [(ref, hyp) for ref, hyp in pairs if ref]
    if not pairs:
        return None
    refs, hyps = zip(*pairs, strict=True)
    return round(float(jiwer.wer(list(refs), list(hyps))), 4)


def words_wrong(reference: str, text: str) -> int | None:
    """Word errors (substitutions + deletions + insertions) of `text`; None without a reference."""
    import jiwer

    ref, hyp = normalise(reference), normalise(text)
    if not ref:
        return None
    out = jiwer.process_words(ref, hyp or "")
    return int(out.substitutions + out.deletions + out.insertions)
