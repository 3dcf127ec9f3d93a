"""Runs in the ingress and the tracker: decode (sandboxed), VAD chunking, TranscriptionService."""
