"""Per-tenant vocabularies at transcription time: terms become hotwords, spellings rewrite.

A vocabulary lives in the job store (`stores.records.Vocabulary`); the service reads it
through `VocabularySource` (a `JobStore` is one) under the caller's tenant, so another
tenant's id is a 404. Spellings rewrite the text of segments and words after decoding,
never the decode itself: the terms do that, as hotwords.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from serve_app.results import Segment, Word
from serve_app.stores.records import Vocabulary


class VocabularySource(Protocol):
    def get_vocabulary(self, vocabulary_id: str, tenant: str) -> Vocabulary: ...


@dataclass(frozen=True)
class Spelling:
    """Every phrase in `sources` (case-insensitive, whole words) is written as `target`."""

    sources: tuple[str, ...]
    target: str

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Spelling:
        return cls(tuple(raw["from"]), str(raw["to"]))


def hotwords_with(terms: list[str], hotwords: str | None) -> str | None:
    """The request's own hotwords first, then the vocabulary's terms."""
    parts = [hotwords] if hotwords else []
    parts += [t for t in terms if t]
    return " ".join(parts) or None


def _pattern(phrase: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in phrase.split()]
    # Words of the phrase may be separated by spaces, hyphens or nothing ("comfy-ui").
    return re.compile(r"(?<!\w)" + r"[\s\-]*".join(words) + r"(?!\w)", re.IGNORECASE)


def rewrite_text(text: str, spellings: list[Spelling]) -> str:
    for spelling in spellings:
        for source in spelling.sources:
            text = _pattern(source).sub(spelling.target, text)
    return text


def _norm(word: str) -> str:
    return re.sub(r"[^\w]", "", word).lower()


def _rewrite_words(words: list[Word], spellings: list[Spelling]) -> list[Word]:
    """Words that spell a source phrase become one word with the target spelling."""
    phrases = [
        ([_norm(w) for w in source.split()], spelling.target)
        for spelling in spellings
        for source in spelling.sources
    ]
    out: list[Word] = []
    i = 0
    while i < len(words):
        for parts, target in phrases:
            n = len(parts)
            if n and [_norm(w.word) for w in words[i : i + n]] == parts:
                first, last = words[i], words[i + n - 1]
                lead = first.word[: len(first.word) - len(first.word.lstrip())]
                tail = re.search(r"[^\w]*$", last.word.strip())
                text = lead + target + (tail.group(0) if tail else "")
                probability = min(w.probability for w in words[i : i + n])
                out.append(Word(first.start, last.end, text, probability))
                i += n
                break
        else:
            out.append(words[i])
            i += 1
    return out


def apply_spellings(segments: list[Segment], raw: list[dict[str, Any]]) -> list[Segment]:
    """Rewrite segment texts and words in place (the caller owns the copies)."""
    if not raw:
        return segments
    spellings = [Spelling.of(r) for r in raw]
    for segment in segments:
        segment.text = rewrite_text(segment.text, spellings)
        if segment.words:
            segment.words = _rewrite_words(segment.words, spellings)
    return segments
