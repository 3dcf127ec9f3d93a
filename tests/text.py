"""Shared test helpers for text: word error rate and reading server-sent events."""

from __future__ import annotations

import json
from typing import Any

import jiwer

_NORMALISE = jiwer.Compose(
    [
        jiwer.ToLowerCase(),
        jiwer.RemovePunctuation(),
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
        jiwer.ReduceToListOfListOfWords(),
    ]
)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate after lower-casing and stripping punctuation."""
    return jiwer.wer(
        reference, hypothesis, reference_transform=_NORMALISE, hypothesis_transform=_NORMALISE
    )


class SseReader:
    """Collects `(event, data)` pairs from the lines of a text/event-stream body."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._kind: str | None = None

    def feed(self, line: str) -> bool:
        """Take one line; True once the `done` event has been read."""
        if line.startswith("event:"):
            self._kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and self._kind:
            self.events.append((self._kind, json.loads(line.split(":", 1)[1])))
            return self._kind == "done"
        return False
