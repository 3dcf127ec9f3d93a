"""The floor Ray Serve sets under submit latency: a no-op endpoint behind the same proxy.

`NoopJobs` answers `POST /v1/jobs` with 202 after reading the multipart file, and does
nothing else: no store, no audio write, no tracker. Driven like the real submits (same
client, rate, clip sizes and moment), its latency is what Serve's proxy, the hop to a
replica and the body fetch back from the proxy cost, on the same cores as the jobs.
"""

import contextlib
import copy
import os
import signal
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from benchmarks.scale_load import Bench, submit_open_loop, submit_summary

_app = FastAPI()


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress(_app)
class NoopJobs:
    """Reads the upload, answers like a submit; the control for `POST /v1/jobs`."""

    @_app.post("/v1/jobs", status_code=202)
    async def submit(self, request: Request) -> JSONResponse:
        async with request.form(max_files=1) as form:
            upload = form.get("file")
            size = (
                len(await upload.read())
                if upload is not None and not isinstance(upload, str)
                else 0
            )
        return JSONResponse({"id": "noop", "bytes": size}, status_code=202)


def deploy_floor(base_url: str, name: str) -> str:
    """Serve `NoopJobs` under `/<name>` on the running Serve; its URL."""
    serve.run(NoopJobs.bind(), name=name, route_prefix=f"/{name}")
    return f"{base_url.rstrip('/')}/{name}"


async def floor_probe(
    bench: Bench, url: str, tenant: str, total: int, rate: float
) -> dict[str, Any]:
    """`total` no-op submits at `rate`/s, exactly as `submit_open_loop` sends real ones."""
    noop = copy.copy(bench)
    noop.url = url
    return submit_summary(await submit_open_loop(noop, [tenant], total, rate))


@contextlib.contextmanager
def tracker_paused(config: Any) -> Iterator[bool]:
    """SIGSTOP the job tracker (on this host) for the block: submits are still accepted and
    made durable, but no job runs, so transcription takes no CPU from the submit path.
    Yields False (and pauses nothing) when the tracker is not a process of this host."""
    import ray

    actor = ray.get_actor(config.jobs.tracker_name, namespace=config.jobs.namespace)
    node, pid = ray.get(
        actor.__ray_call__.remote(
            lambda _self: (ray.get_runtime_context().get_node_id(), os.getpid())
        )
    )
    local = node == ray.get_runtime_context().get_node_id()
    if local:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield local
    finally:
        if local:
            os.kill(pid, signal.SIGCONT)
