"""Formatting and lookup helpers shared by the report, the targets and the shapes section."""

from __future__ import annotations

from typing import Any


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def level(results: dict[str, Any], model: str, concurrency: int) -> dict[str, Any] | None:
    levels = results.get("models", {}).get(model, {}).get("levels", [])
    return next((lv for lv in levels if lv["concurrency"] == concurrency), None)


def ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 3) if num is not None and den else None


def verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "not measured"}[met]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000
