"""whisper-serve: faster-whisper served on Ray Serve."""

__version__ = "0.1.0"
