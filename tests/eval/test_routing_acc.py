import numpy as np
import pytest
from safetensors.numpy import save_file

from eval.metrics.routing_acc import read_routing, routing_accuracy


def test_accuracy_ignores_background_tokens():
    routing = np.array([[2.0, 1.0], [0.1, 0.9], [5.0, 0.0], [0.0, 3.0]])
    mask = np.array([0, 1, -1, 0])
    assert routing_accuracy(routing, mask) == pytest.approx(2 / 3)
    assert routing_accuracy(routing, np.full(4, -1)) is None


def test_read_routing_validates_the_file(tmp_path):
    mask = np.array([[0, 1], [-1, 1]], dtype=np.int64)
    good = {"routing.0": np.random.default_rng(0).normal(size=(2, 2, 2)).astype(np.float32),
            "routing.1": np.zeros((2, 2, 2), np.float32), "index_mask": mask}
    save_file(good, str(tmp_path / "ok.safetensors"))
    points = read_routing(tmp_path / "ok.safetensors", n_refs=2)
    assert sorted(points) == [0, 1] and points[1][1] is not None
    with pytest.raises(ValueError, match="identities on its last axis"):
        read_routing(tmp_path / "ok.safetensors", n_refs=3)
    save_file({"routing.0": np.zeros((2, 2, 2), np.float32), "index_mask": np.array([[0, 2], [0, 0]])},
              str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"integers in \[-1, 1\]"):
        read_routing(tmp_path / "bad.safetensors", n_refs=2)
    save_file({"weights": np.zeros(2, np.float32)}, str(tmp_path / "none.safetensors"))
    with pytest.raises(ValueError, match="no 'routing"):
        read_routing(tmp_path / "none.safetensors", n_refs=2)
