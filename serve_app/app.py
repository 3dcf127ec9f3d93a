"""Typed application builder: `serve run serve_app.app:build_app` / `serve_config.yaml`."""

from __future__ import annotations

from typing import Any, cast

from ray.serve import Application
from ray.serve.deployment import Deployment

from deployments.ingress import Ingress
from deployments.speaker_embedder import SpeakerEmbedder
from deployments.transcriber import Transcriber
from serve_app.config import AppConfig, AutoscalingSettings, ModelConfig, SpeakerEmbedderConfig


def transcriber_options(model: ModelConfig) -> dict[str, Any]:
    """Ray Serve deployment options of one model size."""
    options: dict[str, Any] = {
        "name": model.deployment_name,
        "ray_actor_options": {"num_cpus": model.num_cpus, "num_gpus": model.num_gpus},
        "max_ongoing_requests": model.max_ongoing_requests,
        "max_queued_requests": model.max_queued_requests,
        "user_config": model.batching.model_dump(),
        "health_check_period_s": 10,
        "graceful_shutdown_timeout_s": 30,
    }
    return options | _replicas(model.autoscaling)


def speaker_embedder_options(config: SpeakerEmbedderConfig) -> dict[str, Any]:
    """Ray Serve deployment options of the SpeakerEmbedder (its own resources and scaling)."""
    options: dict[str, Any] = {
        "name": config.deployment_name,
        "ray_actor_options": {"num_cpus": config.num_cpus, "num_gpus": config.num_gpus},
        "max_ongoing_requests": config.max_ongoing_requests,
        "health_check_period_s": 10,
    }
    return options | _replicas(config.autoscaling)


def _replicas(scaling: AutoscalingSettings) -> dict[str, Any]:
    """A fixed replica count when min == max (and no initial count), else autoscaling."""
    if scaling.min_replicas == scaling.max_replicas and scaling.initial_replicas is None:
        return {"num_replicas": scaling.min_replicas}
    return {"autoscaling_config": scaling.to_serve()}


def build_app(args: AppConfig | dict[str, Any]) -> Application:
    """One Transcriber deployment per configured model and a SpeakerEmbedder, behind one Ingress.

    `serve run/deploy serve_config.yaml` passes the raw `args:` dict: with postponed
    annotations Serve cannot see the AppConfig type to validate it, so it is done here.
    """
    if not isinstance(args, AppConfig):
        args = AppConfig.model_validate(args)
    transcribers = {
        model.name: cast(Deployment, Transcriber)
        .options(**transcriber_options(model))
        .bind(model, str(args.cache_path), args.storage.s3)
        for model in args.models
    }
    speakers = (
        cast(Deployment, SpeakerEmbedder)
        .options(**speaker_embedder_options(args.speaker_embedder))
        .bind(args.speaker_embedder)
        if args.speaker_embedder.enabled
        else None
    )
    return (
        cast(Deployment, Ingress)
        .options(
            num_replicas=args.ingress.num_replicas,
            ray_actor_options={
                "num_cpus": args.ingress.num_cpus,
                "resources": dict(args.ingress.resources),
            },
            max_ongoing_requests=args.ingress.max_ongoing_requests,
        )
        .bind(args, transcribers, speakers)
    )
