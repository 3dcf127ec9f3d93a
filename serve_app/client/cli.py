"""`whisper-serve` command line: submit jobs and follow them with progress bars, stream audio
live, manage keys."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm
from websockets.exceptions import WebSocketException

from serve_app.client import JobError, JobsClient, LiveClient
from serve_app.client.live import LiveError, print_events, raw_stream
from serve_app.options import RESPONSE_FORMATS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="whisper-serve", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL")
    parser.add_argument("--api-key", default=None, help="Bearer token, if the service wants one")
    commands = parser.add_subparsers(dest="command", required=True)

    submit = commands.add_parser("transcribe", help="submit audio files as jobs")
    submit.add_argument("files", nargs="+", type=Path)
    submit.add_argument("--model", default=None)
    submit.add_argument("--language", default=None)
    submit.add_argument("--translate", action="store_true", help="translate into English")
    submit.add_argument("--words", action="store_true", help="word timestamps")
    submit.add_argument(
        "--no-pack",
        dest="pack",
        action="store_false",
        help="never share a 30 s window with your other short clips (window packing)",
    )
    submit.add_argument("--diarize", action="store_true", help="label who spoke (speakers)")
    submit.add_argument("--num-speakers", type=int, default=None)
    submit.add_argument("--min-speakers", type=int, default=None)
    submit.add_argument("--max-speakers", type=int, default=None)
    submit.add_argument(
        "--speaker",
        action="append",
        default=[],
        metavar="NAME=CLIP",
        help="a known speaker and a short audio clip of them (repeatable; implies --diarize)",
    )
    submit.add_argument(
        "--multichannel", action="store_true", help="transcribe each channel on its own"
    )
    submit.add_argument("--priority", type=int, default=None, choices=range(10))
    submit.add_argument("--wait", action="store_true", help="wait and print the results")
    submit.add_argument("--format", default="text", choices=RESPONSE_FORMATS)
    submit.add_argument("--out", type=Path, default=None, help="write results into this folder")

    live = commands.add_parser(
        "live",
        help="stream audio to /v1/realtime at real-time pace and print the transcript as it comes",
    )
    live.add_argument(
        "file",
        help="an audio file, or - for raw s16le mono PCM on stdin at --rate "
        "(e.g. arecord -f S16_LE -r 24000 -c 1 -t raw | whisper-serve live -)",
    )
    # Also accepted after the command (`whisper-serve live f.wav --url …`).
    live.add_argument("--url", default=argparse.SUPPRESS, help="service base URL")
    live.add_argument("--api-key", default=argparse.SUPPRESS, help="Bearer token")
    live.add_argument("--model", default=None)
    live.add_argument("--language", default=None)
    live.add_argument("--prompt", default=None)
    live.add_argument("--rate", type=int, default=24000, choices=(24000, 16000))
    live.add_argument("--speed", type=float, default=1.0, help="x real time; 0 = no pacing")
    live.add_argument(
        "--no-vad", dest="vad", action="store_false", help="no server VAD: one commit at the end"
    )
    live.add_argument("--events", action="store_true", help="print every server event as JSON")

    status = commands.add_parser("status", help="show jobs")
    status.add_argument("job_ids", nargs="*")

    cancel = commands.add_parser("cancel", help="cancel jobs; delete ended ones with their data")
    cancel.add_argument("job_ids", nargs="+")

    keys = commands.add_parser("keys", help="admin: API keys, straight in the job store")
    key_commands = keys.add_subparsers(dest="key_command", required=True)
    for name, help_text in (
        ("create", "create a key (the plaintext is printed once, only its hash is stored)"),
        ("list", "list a tenant's keys (never the plaintext)"),
        ("revoke", "revoke a key by id"),
    ):
        sub = key_commands.add_parser(name, help=help_text)
        sub.add_argument("--database-url", required=True, help="storage.database_url")
        sub.add_argument("--tenant", required=True, help="the tenant the key acts for")
        if name == "create":
            sub.add_argument("--name", default="default", help="label, e.g. 'ci' or 'alice'")
        if name == "revoke":
            sub.add_argument("key_id")

    args = parser.parse_args(argv)
    if args.command == "keys":
        return _keys(args)
    if args.command == "live":
        return _live(args)
    with JobsClient(args.url, api_key=args.api_key) as client:
        try:
            if args.command == "transcribe":
                return _transcribe(client, args)
            if args.command == "status":
                jobs = [client.get(j) for j in args.job_ids] or client.list()
                for job in jobs:
                    print(_line(job))
                return 0
            for job_id in args.job_ids:
                view = client.cancel(job_id)
                print(_line(view) if view is not None else f"{job_id}  deleted")
            return 0
        except JobError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2


def _keys(args: argparse.Namespace) -> int:
    from serve_app.security.keys import create_key
    from serve_app.stores import open_job_store

    with open_job_store(args.database_url, migrate=True) as store:
        if args.key_command == "create":
            key, row = create_key(store, args.tenant, args.name)
            print(f"id: {row.id}  tenant: {row.tenant}  name: {row.name}", file=sys.stderr)
            print("store this key now; it cannot be shown again:", file=sys.stderr)
            print(key)
            return 0
        if args.key_command == "revoke":
            if not store.revoke_api_key(args.key_id, args.tenant):
                print(f"error: no active key {args.key_id} for that tenant", file=sys.stderr)
                return 2
            print(f"revoked {args.key_id}")
            return 0
        for row in store.list_api_keys(args.tenant):
            state = f"revoked {row.revoked_at.isoformat()}" if row.revoked_at else "active"
            print(f"{row.id}  {row.name:<16}  {row.created_at.isoformat()}  {state}")
        return 0


def _live(args: argparse.Namespace) -> int:
    client = LiveClient(
        args.url,
        api_key=args.api_key,
        model=args.model,
        language=args.language,
        prompt=args.prompt,
        rate=args.rate,
        vad=args.vad,
    )
    show = print_events(raw=args.events)
    try:
        if args.file == "-":
            asyncio.run(client.stream(raw_stream(sys.stdin.buffer, args.rate), show))
        elif not Path(args.file).is_file():
            print(f"error: no such file: {args.file}", file=sys.stderr)
            return 2
        else:
            client.stream_file(args.file, show, speed=args.speed)
    except (OSError, TimeoutError, WebSocketException, LiveError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _transcribe(client: JobsClient, args: argparse.Namespace) -> int:
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    known: dict[str, str | Path | bytes] = {}
    for spec in args.speaker:
        name, sep, clip = spec.partition("=")
        if not sep or not name or not Path(clip).is_file():
            print(
                f"error: --speaker wants NAME=CLIP with an existing file: {spec}", file=sys.stderr
            )
            return 2
        known[name] = Path(clip)
    jobs = []
    for path in args.files:
        job = client.submit(
            path,
            model=args.model,
            language=args.language,
            task="translate" if args.translate else "transcribe",
            word_timestamps=args.words,
            pack=args.pack,
            priority=args.priority,
            diarize=args.diarize,
            num_speakers=args.num_speakers,
            min_speakers=args.min_speakers,
            max_speakers=args.max_speakers,
            known_speakers=known or None,
            multichannel=args.multichannel,
        )
        jobs.append((path, job))
        print(f"{job['id']}  {job['status']:<9}  {path}", file=sys.stderr)
    if not args.wait:
        return 0
    failed = 0
    for path, job in jobs:
        final = _follow(client, job, path.name)
        if final["status"] != "succeeded":
            failed += 1
            print(f"{path}: {final['status']}: {final.get('error')}", file=sys.stderr)
            continue
        body = client.result(final["id"], args.format)
        text = json.dumps(body, indent=2) if isinstance(body, dict) else body
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            suffix = "json" if args.format.endswith("json") else args.format
            (args.out / f"{path.stem}.{suffix}").write_text(text)
        else:
            print(text)
    return 1 if failed else 0


def _follow(client: JobsClient, job: dict[str, Any], label: str) -> dict[str, Any]:
    with tqdm(total=1, desc=label, unit="chunk", file=sys.stderr, leave=True) as bar:

        def update(view: dict[str, Any]) -> None:
            total = view["total_chunks"] or 1
            bar.total = total
            bar.n = view["done_chunks"] if view["status"] != "succeeded" else total
            bar.set_postfix_str(view["status"])
            bar.refresh()

        return client.wait(job["id"], on_progress=update)


def _line(job: dict[str, Any]) -> str:
    progress = "" if job.get("progress") is None else f"{job['progress'] * 100:5.1f}%"
    return f"{job['id']}  {job['status']:<9} {progress:>6}  {job.get('error') or ''}".rstrip()


if __name__ == "__main__":
    sys.exit(main())
