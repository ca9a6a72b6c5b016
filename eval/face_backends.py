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


class AnalyzerPool:
    """Lazily built face analyzers by backend name, plus a reference-embedding cache.

    `analyzers` may pre-seed instances (tests, or callers that already hold a backend).
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

    def get(self, backend: str) -> FaceAnalyzer:
        """The analyzer for `backend`; MetricUnavailable with the reason when it cannot be built."""
        if backend in self._analyzers:
            return self._analyzers[backend]
        if backend in self._failures:
            raise MetricUnavailable(self._failures[backend])
        try:
            from ingredients.faces.registry import build_analyzer

            analyzer = build_analyzer(backend, **self._options.get(backend, {}))
        except (ImportError, OSError, RuntimeError) as exc:  # missing package, weights file, model load
            reason = f"face backend {backend!r} unavailable: {type(exc).__name__}: {exc}"
            logger.warning(reason)
            self._failures[backend] = reason
            raise MetricUnavailable(reason) from exc
        self._analyzers[backend] = analyzer
        return analyzer

    def reference_embedding(self, backend: str, path: Path) -> np.ndarray:
        """Embedding [D] of the largest face in the reference image at `path` (cached by content).

        MetricUnavailable when the backend is unavailable or the image has no face.
        """
        analyzer = self.get(backend)
        key = (backend, file_sha256(path))
        if key not in self._refs:
            try:
                self._refs[key] = embed_reference(analyzer, load_rgb(path), name=f"reference {path}")
            except NoFaceError as exc:
                self._refs[key] = str(exc)
        value = self._refs[key]
        if isinstance(value, str):
            raise MetricUnavailable(value)
        return value

