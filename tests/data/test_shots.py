"""Shot cuts from the decoded frames and long shots split by time (issue 30)."""

from __future__ import annotations

import numpy as np

from ingredients.data.shots import ShotCuts, shot_duration, split_long_shots


def test_cuts_are_frame_indices_of_the_frames_fed():
    """PySceneDetect's ContentDetector, fed frames one at a time: the hard cut at frame 13 of 30
    (numbered as fed, whatever the video's rate), shots covering every frame."""
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 255, (2, 64, 96, 3), dtype=np.uint8)
    cuts = ShotCuts("content", 27.0, 3.0, 3, rate=120.0)
    for i in range(30):
        frame = a if i < 13 else b
        cuts.add(np.clip(frame.astype(int) + i, 0, 255).astype(np.uint8))
    assert cuts.shots() == [(0, 13), (13, 30)]


def test_long_shots_split_into_equal_pieces_by_time():
    cfr = [i / 8 for i in range(97)]  # 96 frames at 8 fps and the next frame's time: 12 s
    assert split_long_shots([(0, 96)], cfr, 4.0) == [(0, 32), (32, 64), (64, 96)]
    assert split_long_shots([(0, 96)], cfr, 5.0) == [(0, 32), (32, 64), (64, 96)]  # 3 pieces of 4 s, not 5 + 5 + 2
    assert split_long_shots([(0, 96)], cfr, None) == [(0, 96)]
    assert split_long_shots([(0, 10), (10, 96)], cfr, 12.0) == [(0, 10), (10, 96)]
    # variable rate: 2 s at 24 fps then 2 s at 60 fps; split in time, not in frames
    vfr = [i / 24 for i in range(48)] + [2 + i / 60 for i in range(120)]
    assert shot_duration(vfr, 0, 168) == 2 + 119 / 60 + 1 / 60
    assert split_long_shots([(0, 168)], vfr, 2.0) == [(0, 48), (48, 168)]
    assert shot_duration([0.0], 0, 1, 0.04) == 0.04
