-- issue 14: a job's stages after transcription (diarization), each checkpointed once.
CREATE TABLE job_stages (
    job_id      text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    stage       text NOT NULL,
    result      jsonb NOT NULL,
    computed_by text,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (job_id, stage)
);
