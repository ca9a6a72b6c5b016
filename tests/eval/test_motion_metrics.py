"""dynamic_degree, flow_magnitude, flicker on real frames."""

import numpy as np
import pytest
import skimage.data

from eval.metrics.dynamic_degree import is_dynamic, pair_scores
from eval.metrics.flicker import flicker_score
from eval.metrics.flow_magnitude import mean_magnitude
from eval.optical_flow import farneback_flow
from eval.registry import MetricUnavailable
from ingredients.files.video_io import read_video, write_video


def panned(shift_per_frame: int, n: int = 6, size: int = 128) -> np.ndarray:
    """Frames [n, size, size, 3] of the astronaut photo, the window moving right by shift_per_frame px."""
    img = skimage.data.astronaut()
    return np.stack([img[100:100 + size, 100 + t * shift_per_frame:100 + t * shift_per_frame + size] for t in range(n)])


def test_static_clip_is_not_dynamic_and_does_not_flicker(tmp_path):
    frames = np.repeat(skimage.data.astronaut()[None, :256, :256], 16, axis=0)
    video, _fps = read_video(write_video(tmp_path / "static.mp4", frames, fps=8.0))  # through the codec
    flow = farneback_flow(video)
    assert mean_magnitude(flow) < 0.05
    assert not is_dynamic(pair_scores(flow), *video.shape[:3])
    assert flicker_score(video) > 0.998


def test_panning_clip_flow_matches_the_shift_and_is_dynamic():
    frames = panned(shift_per_frame=8, n=16)
    flow = farneback_flow(frames)
    # content moves left by 8 px per frame: median dx of the flow is -8
    assert np.median(flow[..., 0]) == pytest.approx(-8.0, abs=0.5)
    assert np.median(np.abs(flow[..., 1])) < 0.5
    # Farneback underestimates in flat regions and where content enters at the border
    assert 0.7 * 8 < mean_magnitude(flow) < 8.5
    scores = pair_scores(flow)
    assert is_dynamic(scores, 16, 128, 128)  # threshold 6 x 128/256 = 3 px
    assert not is_dynamic(pair_scores(farneback_flow(panned(shift_per_frame=1, n=16))), 16, 128, 128)


def test_flicker_formula():
    a = np.zeros((3, 4, 4, 3), np.uint8)
    a[1] = 51  # |diff| = 51 then 51: mean 51 -> 1 - 51/255 = 0.8
    assert flicker_score(a) == pytest.approx(0.8)
    with pytest.raises(MetricUnavailable):
        flicker_score(a[:1])


def test_dynamic_degree_rule_matches_vbench_counts():
    # 16 frames -> count_num = round(4 * 16 / 16) = 4 pairs above 6 x 256/256 = 6 px
    assert is_dynamic(np.array([7, 7, 7, 7, 0, 0]), 16, 256, 256)
    assert not is_dynamic(np.array([7, 7, 7, 6, 0, 0]), 16, 256, 256)


def test_raft_needs_weights_and_runs_with_a_local_file(tmp_path):
    import torch
    from safetensors.torch import save_file
    from torchvision.models.optical_flow import raft_small

    from eval.optical_flow import load_raft, raft_flow

    with pytest.raises(MetricUnavailable, match="flow.raft_weights is not set"):
        load_raft("raft_small", None)
    with pytest.raises(MetricUnavailable, match="RAFT weights file not found"):
        load_raft("raft_small", str(tmp_path / "none.pth"))
    torch.manual_seed(0)
    path = tmp_path / "raft_small.safetensors"  # untrained weights: checks loading and shapes only
    save_file({k: v.contiguous() for k, v in raft_small(weights=None).state_dict().items()}, str(path))
    model = load_raft("raft_small", str(path))
    flow = raft_flow(panned(shift_per_frame=2, n=3, size=132), model)  # 132 is not a multiple of 8
    assert flow.shape == (2, 132, 132, 2) and np.isfinite(flow).all()
