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


# real containers, as cameras and editors write them (issue 21, finding 7: the tests' "other containers"
# were MP4 bytes renamed .mkv/.mov/.webm, and .avi never appeared)
CONTAINERS = {".mkv": ("libx264", "yuv420p"), ".mov": ("libx264", "yuv420p"), ".webm": ("libvpx-vp9", "yuv420p"),
              ".avi": ("mpeg4", "yuv420p")}


def encode(path, frames: np.ndarray, fps: int, codec: str, pix_fmt: str = "yuv420p"):
    """Frames [T, H, W, 3] into `path` with `codec`; the container is the one its suffix names."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if codec == "mpeg4":
            stream.options = {"qscale": "2"}
        elif codec == "libvpx-vp9":
            stream.options = {"crf": "10", "b": "0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def container_of(path) -> tuple[str, str]:
    import av

    with av.open(str(path)) as c:
        return c.format.name, c.streams.video[0].codec_context.name


@pytest.mark.parametrize("suffix", sorted(CONTAINERS))
def test_real_containers_read_like_their_mp4(tmp_path, suffix):
    yy, xx = np.mgrid[0:64, 0:96]
    frames = np.stack([np.stack([(xx * 2 + t * 4) % 256, yy * 3, np.full_like(xx, 128)], -1) for t in range(10)]).astype(np.uint8)
    path = encode(tmp_path / f"v{suffix}", frames, 12, CONTAINERS[suffix][0])
    fmt, codec = container_of(path)
    assert codec == {"libx264": "h264", "libvpx-vp9": "vp9", "mpeg4": "mpeg4"}[CONTAINERS[suffix][0]]
    assert {".mkv": "matroska", ".mov": "mov", ".webm": "matroska", ".avi": "avi"}[suffix] in fmt  # webm: "matroska,webm"
    video, fps = read_video(path)
    assert fps == 12 and video.shape == frames.shape
    assert np.abs(video.astype(int) - frames).mean() < 6.0
    part, _ = read_video(path, 3, 7)
    assert np.array_equal(part, video[3:7])
    from ingredients.files.video_io import video_rate

    assert video_rate(path) == 12
