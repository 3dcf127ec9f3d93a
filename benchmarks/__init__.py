"""Benchmarks: the service side by side with plain faster-whisper (`python -m benchmarks.run`)."""
