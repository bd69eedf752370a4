"""Offline voice assistant: wake word -> streaming ASR -> MiniMind reply. Never imports torch."""

__version__ = "0.1.0"
