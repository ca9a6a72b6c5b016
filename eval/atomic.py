"""Atomic file writes for evaluation: the shared implementation in `ingredients.atomic`."""

from ingredients.atomic import atomic_path, write_bytes, write_json, write_jsonl, write_text

__all__ = ["atomic_path", "write_bytes", "write_json", "write_jsonl", "write_text"]
