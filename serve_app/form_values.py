"""How HTML forms and OpenAI clients spell lists and objects in form fields.

Multipart forms have no lists or objects: clients send `name[]` repeated, `name[key]`
(OpenAI's SDK for `chunking_strategy`), JSON text, or `1,2`. These helpers turn all of
them into the shapes the one options type validates.
"""

from __future__ import annotations

import json


def split_list(value: object) -> object:
    """Form fields carry lists as repeated keys, JSON (`[1, 2]`) or `1,2`."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                return value
        return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return split_list(value[0])
    return value


def unbracket(data: dict, names: set[str], aliases: set[str]) -> dict:
    """`name[]` → a list under `name`, `name[key]` → `{key: …}` under `name`, for fields
    (keys that are a field's alias, such as `timestamp_granularities[]`, stay)."""
    out = dict(data)
    for key, value in data.items():
        if not isinstance(key, str) or not key.endswith("]") or "[" not in key or key in aliases:
            continue
        name, _, rest = key[:-1].partition("[")
        if name not in names or name in data:
            continue
        del out[key]
        if rest == "":
            out[name] = value if isinstance(value, list) else [value]
        else:
            nested = out.setdefault(name, {})
            if isinstance(nested, dict):
                nested[rest] = value
    return out
