-- issue 14: a job's stages after transcription (diarization), each checkpointed once.
CREATE TABLE job_stages (
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    stage       TEXT NOT NULL,
    result      TEXT NOT NULL CHECK (json_valid(result)),
    computed_by TEXT,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (job_id, stage)
);
