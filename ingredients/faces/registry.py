"""Face backends chosen by name. Adding one = a new module with a FaceAnalyzer class + one line here."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from ingredients.faces.base import FaceAnalyzer

# name -> "module:Class", imported lazily so that e.g. onnxruntime loads only when asked for
_BACKENDS: dict[str, str] = {
    "curricularface": "ingredients.faces.curricularface_backend:CurricularFaceAnalyzer",
    "dlib": "ingredients.faces.dlib_backend:DlibFaceAnalyzer",
    "insightface": "ingredients.faces.insightface_backend:InsightFaceAnalyzer",
}


def available_backends() -> list[str]:
    """Registered backend names, sorted."""
    return sorted(_BACKENDS)


def backend_class(name: str) -> type:
    """The class registered as `name` (imports its module, not its model files)."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown face backend {name!r}; valid names: {', '.join(available_backends())}")
    module_name, class_name = _BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def backend_options(name: str) -> list[str]:
    """The keyword options the backend `name` accepts (its constructor's parameters), sorted."""
    params = inspect.signature(backend_class(name).__init__).parameters
    return sorted(p for p in params if p != "self" and params[p].kind in (params[p].POSITIONAL_OR_KEYWORD, params[p].KEYWORD_ONLY))


def build_analyzer(name: str, **options: Any) -> FaceAnalyzer:
    """Construct the backend registered as `name` with its keyword `options`."""
    cls = backend_class(name)
    try:
        analyzer = cls(**options)
    except TypeError as exc:
        raise TypeError(f"bad options for face backend {name!r}: {exc}") from exc
    if not isinstance(analyzer, FaceAnalyzer):
        raise TypeError(f"backend {name!r} ({_BACKENDS[name]}) does not implement FaceAnalyzer")
    return analyzer
