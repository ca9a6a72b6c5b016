import pytest

from ingredients.faces.base import FaceAnalyzer
from ingredients.faces.dlib_backend import DlibFaceAnalyzer
from ingredients.faces.registry import available_backends, build_analyzer


def test_registry_lists_both_backends():
    assert available_backends() == ["curricularface", "dlib", "insightface"]


def test_unknown_backend_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown face backend 'retinaface'; valid names: curricularface, dlib, insightface"):
        build_analyzer("retinaface")


def test_build_dlib_with_options():
    analyzer = build_analyzer("dlib", upsample=0)
    assert isinstance(analyzer, DlibFaceAnalyzer) and isinstance(analyzer, FaceAnalyzer)
    assert analyzer.upsample == 0 and analyzer.embedding_dim == 128


def test_bad_option_names_the_backend():
    with pytest.raises(TypeError, match="bad options for face backend 'dlib'"):
        build_analyzer("dlib", upsampel=1)
