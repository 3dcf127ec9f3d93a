from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from serve_app.app import transcriber_options
from serve_app.config import AppConfig, JobsConfig, ModelConfig


def test_defaults_run_without_external_services():
    config = AppConfig()
    assert config.storage.database_url.startswith("sqlite:///")
    assert config.storage.blob_url.startswith("file:///")
    assert config.storage.redis_url is None
    assert config.resolve_model(None).name == "tiny.en"
    assert config.resolve_model("whisper-1").name == "tiny.en"
    assert config.resolve_model("nope") is None


def test_serve_config_yaml_validates():
    with open("serve_config.yaml") as handle:
        raw = yaml.safe_load(handle)
    args = raw["applications"][0]["args"]
    config = AppConfig.model_validate(args)
    assert [m.name for m in config.models] == ["tiny.en", "base"]
    assert raw["applications"][0]["import_path"] == "serve_app.app:build_app"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"models": []}, "at least 1"),
        ({"models": [{"name": "a"}, {"name": "a"}]}, "used twice"),
        ({"models": [{"name": "a", "aliases": ["b"]}, {"name": "b"}]}, "used twice"),
        ({"models": [{"name": "bad name"}]}, "must match"),
        ({"models": [{"name": "a", "num_gpus": 1.5}]}, "whole number"),
        ({"models": [{"name": "a", "max_ongoing_requests": 4}]}, "max_ongoing_requests"),
        (
            {"models": [{"name": "a", "autoscaling": {"min_replicas": 3, "max_replicas": 2}}]},
            "min_replicas",
        ),
        ({"default_model": "zzz"}, "default_model"),
        ({"unknown_field": 1}, "Extra inputs"),
    ],
)
def test_invalid_configs_have_clear_messages(raw, message):
    with pytest.raises(ValidationError) as err:
        AppConfig.model_validate(raw)
    assert message in str(err.value)


def test_transcriber_options_follow_model_config():
    model = ModelConfig(
        name="base",
        num_gpus=0.5,
        num_cpus=0.5,
        autoscaling={"min_replicas": 0, "max_replicas": 4, "target_ongoing_requests": 8},
        batching={"max_batch_size": 16, "batch_wait_timeout_s": 0.02},
    )
    opts = transcriber_options(model)
    assert opts["name"] == "Transcriber-base"
    assert opts["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.5}
    assert opts["user_config"] == {
        "max_batch_size": 16,
        "batch_wait_timeout_s": 0.02,
        "max_linger_s": 0.2,
        "busy_background_batch_size": 4,
        "busy_window_s": 1.0,
    }
    assert opts["autoscaling_config"]["max_replicas"] == 4
    assert opts["autoscaling_config"]["min_replicas"] == 0
    fixed = transcriber_options(ModelConfig(name="tiny.en"))
    assert fixed["num_replicas"] == 1 and "autoscaling_config" not in fixed


def test_cpu_threads_follow_cpu_share():
    assert ModelConfig(name="a", num_cpus=0.5).effective_cpu_threads == 1
    assert ModelConfig(name="a", num_cpus=2).effective_cpu_threads == 2
    assert ModelConfig(name="a", num_cpus=0.5, cpu_threads=4).effective_cpu_threads == 4


def test_webhook_secret_from_a_file_and_retention_overrides(tmp_path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    jobs = JobsConfig(webhook_secret_file=str(secret))
    assert jobs.signing_secret() == "s3cret"
    secret.write_text("rotated")  # read at signing time: a rotated Secret applies at once
    assert jobs.signing_secret() == "rotated"
    with pytest.raises(ValidationError):
        JobsConfig(webhook_secret="a", webhook_secret_file=str(secret))

    retention = AppConfig.model_validate(
        {"retention": {"result_days": 7, "tenants": {"legal": {"result_days": None}}}}
    ).retention
    assert retention.policy_for("acme").result_days == 7
    assert retention.policy_for("acme").audio_hours == 0
    legal = retention.policy_for("legal")
    assert legal.result_days is None and legal.job_days == 90
