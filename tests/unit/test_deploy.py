"""The deployment files agree with the code: KubeRay manifests and the container image.

No cluster and no container can run here, so these read the files: the RayService's
serveConfigV2 must equal serve_config.yaml plus the documented overrides and validate as
`AppConfig`; the Dockerfile must build on the Ray version pyproject.toml pins and install
the project the way `make install` does.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from serve_app.config import AppConfig

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from kuberay_config import merge, serve_config  # noqa: E402  (a script module)

KUBERAY = ROOT / "deploy" / "kuberay"
VARIANTS = ["gpu", "cpu"]


def manifest(variant: str) -> dict[str, Any]:
    return yaml.safe_load((KUBERAY / f"rayservice.{variant}.yaml").read_text())


def pods(doc: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = doc["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [g["template"]["spec"] for g in groups]


@pytest.mark.parametrize("variant", VARIANTS)
def test_serve_config_v2_is_serve_config_plus_documented_overrides(variant: str) -> None:
    doc = manifest(variant)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayService"
    embedded = yaml.safe_load(doc["spec"]["serveConfigV2"])
    assert embedded == serve_config(variant), f"regenerate: scripts/kuberay_config.py {variant}"
    for app in embedded["applications"]:
        config = AppConfig.model_validate(app["args"])
        assert config.storage.database_url.startswith("postgresql://")
        assert config.storage.blob_url.startswith("s3://")
        assert config.jobs.webhook_secret is None and config.jobs.webhook_secret_file
    # Only what overrides.yaml lists differs from serve_config.yaml.
    base = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    overrides = yaml.safe_load((KUBERAY / "overrides.yaml").read_text())
    assert merge(merge(base, overrides["common"]), overrides[variant]) == embedded


def test_merge_rule() -> None:
    base = {"a": 1, "m": [{"name": "x", "v": 1}, {"name": "y", "v": 2}], "l": [1, 2]}
    over = {"m": [{"name": "y", "v": 3}, {"name": "z"}], "l": [3], "b": {"c": 1}}
    assert merge(base, over) == {
        "a": 1,
        "m": [{"name": "x", "v": 1}, {"name": "y", "v": 3}, {"name": "z"}],
        "l": [3],
        "b": {"c": 1},
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_cluster_shape_autoscaling_fault_tolerance_and_secrets(variant: str) -> None:
    doc = manifest(variant)
    cluster = doc["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == pinned_ray()
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    gcs = cluster["gcsFaultToleranceOptions"]
    assert gcs["redisAddress"] and "valueFrom" in gcs["redisPassword"]
    assert gcs["redisPassword"]["valueFrom"]["secretKeyRef"]["name"]
    workers = cluster["workerGroupSpecs"]
    limits = [
        c["resources"]["limits"] for w in workers for c in w["template"]["spec"]["containers"]
    ]
    if variant == "gpu":
        assert all(limit.get("nvidia.com/gpu") == 1 for limit in limits)
        assert all(m.num_gpus > 0 for m in app_config(doc).models)
    else:
        assert not any("nvidia.com/gpu" in limit for limit in limits)
        assert all(m.num_gpus == 0 for m in app_config(doc).models)
    for pod in pods(doc):
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            assert container["image"].endswith(f"-{variant}")
            refs = {e["secretRef"]["name"] for e in container.get("envFrom", [])}
            assert {"whisper-serve-postgres", "whisper-serve-s3"} <= refs
            # No secret value inline: plain env values are only Ray tuning knobs.
            assert all(e["name"].startswith("RAY_") for e in container.get("env", []))
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            webhook_dir = str(Path(app_config(doc).jobs.webhook_secret_file or "").parent)
            assert volumes[mounts[webhook_dir]]["secret"]["secretName"] == "whisper-serve-webhook"
    text = (KUBERAY / f"rayservice.{variant}.yaml").read_text().lower()
    # A key that names a secret has no value on its line (it is a secretKeyRef below).
    assert not re.search(r"(password|secret_access_key|webhook_secret)[ \t]*:[ \t]*[^\s{]", text)


def app_config(doc: dict[str, Any]) -> AppConfig:
    embedded = yaml.safe_load(doc["spec"]["serveConfigV2"])
    return AppConfig.model_validate(embedded["applications"][0]["args"])


def pinned_ray() -> str:
    """The one Ray release pyproject.toml allows: `ray[serve]>=X.Y,<X.Y+1` -> X.Y.0."""
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'"ray\[serve\]>=(\d+)\.(\d+),<(\d+)\.(\d+)"', text)
    assert match, "pyproject.toml no longer pins ray[serve] to one minor release"
    major, minor, upper_major, upper_minor = map(int, match.groups())
    assert (upper_major, upper_minor) == (major, minor + 1)
    return f"{major}.{minor}.0"


def _dockerfile() -> str:
    return (ROOT / "deploy" / "Dockerfile").read_text()


def _run_commands(text: str) -> list[str]:
    """The shell commands of every RUN, continuation lines joined, split at `&&`."""
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for line in joined.splitlines():
        if line.startswith("RUN "):
            commands += [c.strip() for c in line[4:].split("&&")]
    return commands


def test_dockerfile_builds_on_the_pinned_ray_image() -> None:
    text = _dockerfile()
    version = pinned_ray()
    default_tag = re.search(r"^ARG RAY_TAG=(\S+)$", text, re.M)
    assert default_tag and default_tag.group(1) == f"{version}-py311-gpu"
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_TAG\}$", text, re.M)
    assert f"RAY_TAG={version}-py311 " in text  # the documented CPU build
    assert f"ray.__version__ != '{version}'" in text
    # The Python of the image is the one the project supports.
    assert re.search(r'requires-python = ">=3\.11', (ROOT / "pyproject.toml").read_text())


def test_dockerfile_installs_like_make_install_and_bakes_the_weights() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("$(STAMP): pyproject.toml", 1)[1].split("\n\n", 1)[0]
    make_pips = [
        shlex.split(line.strip().replace("$(BIN)/python", "python"))
        for line in recipe.splitlines()
        if "-m pip install" in line
    ]
    docker_pips = [shlex.split(c) for c in _run_commands(_dockerfile()) if "-m pip install" in c]
    assert len(make_pips) == len(docker_pips) == 3
    assert make_pips[0] == docker_pips[0]  # pip itself upgraded first
    # Then the project, editable; the image leaves out only the [test,bench] extras.
    assert make_pips[1][:-1] == docker_pips[1][:-1]
    assert make_pips[1][-1] == ".[test,bench]" and docker_pips[1][-1] == "."
    # The speaker encoder's weights: resemblyzer without its torch dependency.
    assert make_pips[2] == docker_pips[2]
    assert "--no-deps" in make_pips[2] and make_pips[2][-1] == "resemblyzer==0.1.4"
    bake = [c for c in _run_commands(_dockerfile()) if "bake_weights.py" in c]
    assert bake == [
        "python bake_weights.py --config serve_config.yaml --cache-dir /home/ray/models"
    ]
    for variant in VARIANTS:
        assert app_config(manifest(variant)).model_cache_dir == "/home/ray/models"
