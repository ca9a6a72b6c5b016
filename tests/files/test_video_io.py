import numpy as np
import pytest

from ingredients.files.video_io import read_video, write_video


def test_round_trip_is_close_and_leaves_no_temp_files(tmp_path):
    yy, xx = np.mgrid[0:64, 0:96]
    frames = np.stack([np.stack([(xx * 2 + t * 4) % 256, yy * 3, np.full_like(xx, 128)], -1) for t in range(6)]).astype(np.uint8)
    path = write_video(tmp_path / "v.mp4", frames, fps=8)
    video, fps = read_video(path)
    assert fps == 8
    assert video.shape == frames.shape and video.dtype == np.uint8
    assert np.abs(video.astype(int) - frames).mean() < 3.0
    assert read_video(path, 0, 2)[0].shape[0] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 63, 64, 3), np.uint8), fps=8)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "f.mp4", np.zeros((2, 64, 64, 3), np.float32), fps=8)
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        read_video(tmp_path / "nope.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="junk.mp4"):
        read_video(tmp_path / "junk.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.mp4"]
