"""Client side: runs in the user's process and speaks only HTTP to the service."""

from serve_app.client.jobs import JobError, JobsClient
from serve_app.client.live import LiveClient

__all__ = ["JobError", "JobsClient", "LiveClient"]
