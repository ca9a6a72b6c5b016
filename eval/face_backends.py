"""Face recognizer backends for evaluation, built once per process through
`ingredients.faces.registry.build_analyzer`, with reference embeddings cached per image file.

A backend that cannot be built is remembered with the reason, which the face metrics report as
missing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from eval.registry import MetricUnavailable
from eval.video_faces import embed_reference
from ingredients.faces.base import FaceAnalyzer
from ingredients.faces.errors import NoFaceError
from ingredients.faces.image_io import load_rgb
from ingredients.files.hashing import file_sha256

logger = logging.getLogger(__name__)


def variant_key(backend: str, overrides: dict[str, Any]) -> str:
    """The pool's name of `backend` built with `overrides` replacing its options, e.g.
    'insightface[det_size=320]' (the plain name without overrides)."""
    if not overrides:
        return backend
    return f"{backend}[{','.join(f'{k}={v}' for k, v in sorted(overrides.items()))}]"


class AnalyzerPool:
    """Lazily built face analyzers by backend name, plus a reference-embedding cache.

    `analyzers` may pre-seed instances (tests, or callers that already hold a backend), keyed by
    backend name or by `variant_key(backend, overrides)`.
    """

    def __init__(self, options: dict[str, dict[str, Any]] | None = None,
                 analyzers: dict[str, FaceAnalyzer] | None = None) -> None:
        self._options = dict(options or {})
        self._analyzers: dict[str, FaceAnalyzer] = dict(analyzers or {})
        self._failures: dict[str, str] = {}
        self._refs: dict[tuple[str, str], np.ndarray | str] = {}

    def check_names(self, backends: tuple[str, ...]) -> None:
        """Unknown backend names are a configuration error (not a missing metric)."""
        from ingredients.faces.registry import available_backends

        known = set(available_backends()) | set(self._analyzers)
        unknown = [b for b in backends if b not in known]
        if unknown:
            raise ValueError(f"eval.face_backends: unknown backend(s) {unknown}; valid names: {sorted(known)}")

    def get(self, backend: str, **overrides: Any) -> FaceAnalyzer:
        """The analyzer for `backend`, with `overrides` replacing its configured options (e.g.
        det_size=320; the configured analyzer itself where it already has those values);
        MetricUnavailable with the reason when it cannot be built."""
        key = variant_key(backend, overrides)
        if key in self._analyzers:
            return self._analyzers[key]
        if key in self._failures:
            raise MetricUnavailable(self._failures[key])
        if overrides:
            base = self.get(backend)
            if all(getattr(base, name, None) == value for name, value in overrides.items()):
                return base
        try:
            from ingredients.faces.registry import build_analyzer

            analyzer = build_analyzer(backend, **{**self._options.get(backend, {}), **overrides})
        except (ImportError, OSError, RuntimeError) as exc:  # missing package, weights file, model load
            reason = f"face backend {key!r} unavailable: {type(exc).__name__}: {exc}"
            logger.warning(reason)
            self._failures[key] = reason
            raise MetricUnavailable(reason) from exc
        self._analyzers[key] = analyzer
        return analyzer

    def reference_embedding(self, backend: str, path: Path, **overrides: Any) -> np.ndarray:
        """Embedding [D] of the largest face in the reference image at `path` (cached by content),
        by `get(backend, **overrides)`.

        MetricUnavailable when the backend is unavailable or the image has no face.
        """
        analyzer = self.get(backend, **overrides)
        key = (variant_key(backend, overrides) if analyzer is not self.get(backend) else backend, file_sha256(path))
        if key not in self._refs:
            try:
                self._refs[key] = embed_reference(analyzer, load_rgb(path), name=f"reference {path}")
            except NoFaceError as exc:
                self._refs[key] = str(exc)
        value = self._refs[key]
        if isinstance(value, str):
            raise MetricUnavailable(value)
        return value
