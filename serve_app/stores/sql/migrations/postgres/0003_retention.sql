-- Issue 17, retention: the sweeper walks ended jobs in the order they ended, and an audio
-- object (shared by every job of the same audio) is deleted only when no row points at it.

CREATE INDEX jobs_finished_idx ON jobs (finished_at, id)
    WHERE status IN ('succeeded', 'failed', 'cancelled');
CREATE INDEX jobs_audio_key_idx ON jobs (audio_key) WHERE audio_key IS NOT NULL;
