"""Webhook signatures: the verify helper rejects tampering and replays outside 5 minutes.

(Delivery of signed webhooks on the real stack is covered in jobs/test_jobs_api.py.)
"""

from __future__ import annotations

import pytest

from serve_app.jobs.webhooks import DEFAULT_TOLERANCE_S, SignatureError, sign, verify

BODY = b'{"type": "job.succeeded", "job": {"id": "abc"}}'
SENT_AT = 1_700_000_000


def test_tolerance_is_five_minutes():
    assert DEFAULT_TOLERANCE_S == 300


@pytest.mark.parametrize("delay", [0, 1, 299, 300])
def test_fresh_signatures_verify(delay):
    verify("secret", sign("secret", BODY, SENT_AT), BODY, now=SENT_AT + delay)


@pytest.mark.parametrize("delay", [301, 3600, -301])
def test_replays_and_future_timestamps_are_rejected(delay):
    with pytest.raises(SignatureError, match="tolerance"):
        verify("secret", sign("secret", BODY, SENT_AT), BODY, now=SENT_AT + delay)


def test_a_fresh_timestamp_cannot_be_grafted_onto_an_old_signature():
    old = sign("secret", BODY, SENT_AT)
    grafted = old.replace(f"t={SENT_AT}", f"t={SENT_AT + 3600}")
    with pytest.raises(SignatureError, match="mismatch"):
        verify("secret", grafted, BODY, now=SENT_AT + 3600)


@pytest.mark.parametrize("header", ["", "t=1", "v1=abc", "t=x,v1=abc", "garbage"])
def test_malformed_headers_are_rejected(header):
    with pytest.raises(SignatureError):
        verify("secret", header, BODY, now=SENT_AT)


def test_body_and_secret_are_bound():
    header = sign("secret", BODY, SENT_AT)
    with pytest.raises(SignatureError):
        verify("secret", header, BODY + b" ", now=SENT_AT)
    with pytest.raises(SignatureError):
        verify("other", header, BODY, now=SENT_AT)
