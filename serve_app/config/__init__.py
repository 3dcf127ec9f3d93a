"""Typed application config: the single source of every setting.

`serve_config.yaml` passes `args:` to `serve_app.app:build_app`, which Ray Serve validates
into `AppConfig`. Nothing else in the code reads the environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from serve_app.config.base import _Strict
from serve_app.config.models import (
    MODEL_NAME_RE,
    AutoscalingSettings,
    BatchSettings,
    ModelConfig,
    PackingSettings,
)
from serve_app.config.retention import RetentionConfig, RetentionPolicy
from serve_app.config.services import (
    AuthConfig,
    IngressConfig,
    JobsConfig,
    LimitsConfig,
    RateLimitConfig,
    RateLimitSettings,
    RealtimeConfig,
    ResilienceConfig,
    S3Config,
    ServerVadSettings,
    StorageConfig,
    UsageConfig,
)
from serve_app.config.speakers import DiarizationConfig, SpeakerEmbedderConfig

__all__ = [
    "MODEL_NAME_RE",
    "AppConfig",
    "AuthConfig",
    "AutoscalingSettings",
    "BatchSettings",
    "DiarizationConfig",
    "IngressConfig",
    "JobsConfig",
    "LimitsConfig",
    "ModelConfig",
    "PackingSettings",
    "RateLimitConfig",
    "RateLimitSettings",
    "RealtimeConfig",
    "ResilienceConfig",
    "RetentionConfig",
    "RetentionPolicy",
    "S3Config",
    "ServerVadSettings",
    "SpeakerEmbedderConfig",
    "StorageConfig",
    "UsageConfig",
]


class AppConfig(_Strict):
    """Root of the app-builder args (`serve_config.yaml` → `args:`)."""

    models: list[ModelConfig] = Field(
        default_factory=lambda: [ModelConfig(name="tiny.en", aliases=["whisper-1"])],
        min_length=1,
    )
    default_model: str | None = Field(None, description="Used when a request names no model.")
    model_cache_dir: str = Field(
        "~/.cache/whisper-serve/models", description="Where reassembled/downloaded weights go."
    )
    ingress: IngressConfig = Field(default_factory=IngressConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    realtime: RealtimeConfig = Field(default_factory=RealtimeConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    usage: UsageConfig = Field(default_factory=UsageConfig)
    speaker_embedder: SpeakerEmbedderConfig = Field(default_factory=SpeakerEmbedderConfig)
    diarization: DiarizationConfig = Field(default_factory=DiarizationConfig)

    @model_validator(mode="after")
    def _unique_names(self) -> AppConfig:
        seen: dict[str, str] = {}
        for model in self.models:
            for ident in [model.name, *model.aliases]:
                if ident in seen:
                    raise ValueError(f"model id {ident!r} is used twice ({seen[ident]})")
                seen[ident] = model.name
        if self.default_model is not None and self.default_model not in seen:
            raise ValueError(f"default_model {self.default_model!r} is not a configured model")
        return self

    def model_ids(self) -> dict[str, str]:
        """Every accepted id (names and aliases) -> canonical model name."""
        ids: dict[str, str] = {}
        for model in self.models:
            ids[model.name] = model.name
            for alias in model.aliases:
                ids[alias] = model.name
        return ids

    def resolve_model(self, requested: str | None) -> ModelConfig | None:
        ident = requested or self.default_model or self.models[0].name
        name = self.model_ids().get(ident)
        return next((m for m in self.models if m.name == name), None)

    @property
    def cache_path(self) -> Path:
        return Path(self.model_cache_dir).expanduser()
