"""Print the `serveConfigV2` of a KubeRay RayService: serve_config.yaml + documented overrides.

    python scripts/kuberay_config.py gpu|cpu

The overrides live in deploy/kuberay/overrides.yaml (`common`, then the variant); the merge
rule is in `merge`. tests/unit/test_deploy.py checks the manifests against this output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ROOT / "deploy" / "kuberay" / "overrides.yaml"
VARIANTS = ("gpu", "cpu")


def merge(base: Any, over: Any) -> Any:
    """Dicts key by key, lists of named dicts by name (new names appended), else replace."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and isinstance(over, list) and _named(base) and _named(over):
        by_name = {item["name"]: item for item in over}
        merged = [
            merge(item, by_name.pop(item["name"])) if item["name"] in by_name else item
            for item in base
        ]
        return merged + list(by_name.values())
    return over


def _named(items: list[Any]) -> bool:
    return all(isinstance(item, dict) and "name" in item for item in items)


def serve_config(variant: str) -> dict[str, Any]:
    """serve_config.yaml <- common <- variant."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}")
    base = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    overrides = yaml.safe_load(OVERRIDES.read_text())
    return merge(merge(base, overrides["common"]), overrides[variant])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=VARIANTS)
    args = parser.parse_args()
    sys.stdout.write(yaml.safe_dump(serve_config(args.variant), sort_keys=False, width=100))
    return 0


if __name__ == "__main__":
    sys.exit(main())
