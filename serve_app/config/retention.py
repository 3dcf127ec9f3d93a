"""Retention of job data: how long audio, results and job rows are kept after a job ends."""

from __future__ import annotations

from pydantic import Field

from serve_app.config.base import _Strict


class RetentionPolicy(_Strict):
    """Keep times counted from the moment a job ended (succeeded, failed or cancelled).

    `null` keeps the data until the job is deleted. Deleting a row takes its audio and
    result with it, so `job_days` below the other two shortens them as well.
    """

    audio_hours: float | None = Field(
        0.0,
        ge=0,
        description="Hours the uploaded audio is kept after the job ended; 0 deletes it at the "
        "first sweep after the job ended.",
    )
    result_days: float | None = Field(
        30.0, ge=0, description="Days the transcript (result and chunk checkpoints) is kept."
    )
    job_days: float | None = Field(
        90.0, ge=0, description="Days the job row (status, metadata, webhook log) is kept."
    )


class RetentionConfig(RetentionPolicy):
    """The default policy, per-tenant overrides and the sweeper that enforces them."""

    enabled: bool = Field(True, description="Run the sweeper in the JobTracker actor.")
    sweep_interval_s: float = Field(60.0, gt=0, description="Pause between two sweeps.")
    batch_size: int = Field(
        100, ge=1, le=10_000, description="Jobs one sweep query handles; a sweep loops batches."
    )
    max_batches: int = Field(
        50, ge=1, description="Batches per kind in one sweep; the rest waits for the next."
    )
    max_jobs_per_s: float | None = Field(
        50.0,
        gt=0,
        description="Jobs the sweeper handles per second at most (each is an object delete "
        "and a row write). After a big drain a sweep has hundreds to delete, and at full "
        "speed it kept the disk's journal and the database's write lock busy for seconds "
        "while submits waited on both. null: no limit.",
    )
    upload_hours: float | None = Field(
        24.0,
        ge=0,
        description="Hours a presigned upload (`POST /v1/uploads`, S3 only) is kept after it "
        "was written; a job copies the audio it names, so this only bounds unused or "
        "re-submittable uploads. null keeps them (e.g. for an S3 lifecycle rule instead).",
    )
    tenants: dict[str, RetentionPolicy] = Field(
        default_factory=dict,
        description="Overrides by tenant; fields left out inherit the defaults above.",
    )

    def policy_for(self, tenant: str | None) -> RetentionPolicy:
        """The policy of one tenant (the defaults when it has no override)."""
        defaults = RetentionPolicy(
            audio_hours=self.audio_hours, result_days=self.result_days, job_days=self.job_days
        )
        override = self.tenants.get(tenant) if tenant is not None else None
        if override is None:
            return defaults
        return defaults.model_copy(update=override.model_dump(exclude_unset=True))
