"""The decoding layer on footage as devices record it, made by ffmpeg's CLI (imageio-ffmpeg's binary):
display-matrix rotations and flips, the legacy `rotate` tag, non-square pixels, variable frame rate,
a still picture named like a video (issue 30, findings 1 to 3 and 5)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from ingredients.files.video_decode import NotAVideoError, decode, orientation_from_matrix
from ingredients.files.video_io import frames_at, probe_video, read_video


def ffmpeg(*args: str, stdin: bytes | None = None) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", *args], input=stdin, check=True)


def encode_rgb(path: Path, frames: np.ndarray, rate: float, *out_args: str) -> Path:
    """Frames [T, H, W, 3] encoded by the ffmpeg CLI (H.264 unless `out_args` say otherwise)."""
    h, w = frames.shape[1:3]
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(rate), "-i", "-",
           *(out_args or ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "12")), str(path), stdin=np.ascontiguousarray(frames).tobytes())
    return path


def pattern(t: int = 4, h: int = 32, w: int = 48) -> np.ndarray:
    """An asymmetric picture (a bright block top-left, a ramp) that tells every orientation apart."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.stack([np.stack([xx * 5 % 256, yy * 7 % 256, np.full_like(xx, 40 * i)], -1) for i in range(t)]).astype(np.uint8)
    frames[:, :8, :12] = 255
    return frames


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("decode")
    path = encode_rgb(folder / "stored.mp4", pattern(), 8)
    return path, read_video(path)[0]


# (ffmpeg input options that tag the copy, what a player shows: the stored frames [T, H, W, 3] turned)
ROTATIONS = {
    "display_rotation_90": (["-display_rotation", "90"], lambda v: np.rot90(v, 1, axes=(1, 2))),
    "display_rotation_180": (["-display_rotation", "180"], lambda v: v[:, ::-1, ::-1]),
    "display_rotation_270": (["-display_rotation", "270"], lambda v: np.rot90(v, -1, axes=(1, 2))),
    "display_hflip": (["-display_hflip"], lambda v: v[:, :, ::-1]),
    "display_vflip": (["-display_vflip"], lambda v: v[:, ::-1]),
    "rotation_90_hflip": (["-display_rotation", "90", "-display_hflip"], None),
}


@pytest.mark.parametrize("name", sorted(ROTATIONS))
def test_display_matrix_is_applied_as_ffmpeg_shows_it(stored, tmp_path, name):
    """Finding 2: a phone's display matrix was ignored (frames decoded sideways). Each orientation now
    decodes as ffmpeg's CLI displays it (its autorotate output, compared pixel for pixel) and as the
    stored frames turned by the expected quarter turns and flips."""
    path, frames = stored
    tag_args, turned = ROTATIONS[name]
    tagged = tmp_path / f"{name}.mp4"
    ffmpeg(*tag_args, "-i", str(path), "-c", "copy", str(tagged))
    video, _ = read_video(tagged)
    shown = tmp_path / "shown.rgb"
    ffmpeg("-i", str(tagged), "-f", "rawvideo", "-pix_fmt", "rgb24", str(shown))
    h, w = video.shape[1:3]
    assert np.array_equal(video, np.fromfile(shown, np.uint8).reshape(-1, h, w, 3))
    if turned is not None:
        assert np.array_equal(video, turned(frames))
    info = probe_video(tagged)
    assert (info.width, info.height) == (w, h)


def test_legacy_rotate_tag_is_applied(stored, tmp_path):
    """Older files carry a `rotate` stream tag (degrees clockwise) instead of a display matrix."""
    path, frames = stored
    tagged = tmp_path / "tag.mkv"
    ffmpeg("-i", str(path), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(tagged))
    assert np.array_equal(read_video(tagged)[0], np.rot90(frames, -1, axes=(1, 2)))


def test_matrix_orientations_cover_the_dihedral_group():
    """Every right-angle orientation of a display matrix maps to a distinct quarter turn / mirror."""
    one = 1 << 16
    mats = {(0, False): [one, 0, 0, 0, one, 0, 0, 0, 1 << 30], (1, False): [0, -one, 0, one, 0, 0, 0, 0, 1 << 30],
            (2, False): [-one, 0, 0, 0, -one, 0, 0, 0, 1 << 30], (3, False): [0, one, 0, -one, 0, 0, 0, 0, 1 << 30],
            (0, True): [-one, 0, 0, 0, one, 0, 0, 0, 1 << 30], (2, True): [one, 0, 0, 0, -one, 0, 0, 0, 1 << 30]}
    for (k, flip), m in mats.items():
        o = orientation_from_matrix(np.array(m, np.int32))
        assert (o.k % 4, o.hflip) == (k, flip), (m, o)


def test_non_square_pixels_are_shown_at_their_aspect(tmp_path):
    """Finding 3: a 720x480 16:9 DVD frame (SAR 32:27) was curated at its stored 3:2 shape; the decoded
    frame is now 853x480, a circle stays a circle."""
    h, w = 480, 720
    yy, xx = np.mgrid[0:h, 0:w]
    # an ellipse stored squeezed: displayed (x * 32/27) it is a circle of radius 120
    inside = ((xx - w / 2) * 32 / 27) ** 2 + (yy - h / 2) ** 2 < 120 ** 2
    frame = np.where(inside[..., None], 230, 20).astype(np.uint8).repeat(3, -1)[None].repeat(2, 0)
    path = encode_rgb(tmp_path / "dvd.mp4", frame, 25, "-vf", "setsar=32/27", "-c:v", "libx264", "-pix_fmt", "yuv420p")
    video, _ = read_video(path)
    assert video.shape[1:3] == (480, 853)
    disc = video[0, :, :, 0] > 128
    rows, cols = np.nonzero(disc)
    width, height = cols.max() - cols.min() + 1, rows.max() - rows.min() + 1
    assert abs(width - height) <= 3 and abs(height - 240) <= 3, (width, height)
    assert probe_video(path).width == 853


def test_variable_frame_rate_frames_carry_their_presentation_times(tmp_path):
    """Finding 1: a 24 fps second then a 60 fps half second (as a phone switches rate) decodes with each
    frame's own time, not index / average rate."""
    a = encode_rgb(tmp_path / "a.mp4", pattern(24), 24)
    b = encode_rgb(tmp_path / "b.mp4", pattern(30)[:, ::-1].copy(), 60)
    vfr = tmp_path / "vfr.mp4"
    ffmpeg("-i", str(a), "-i", str(b), "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]", "-fps_mode", "vfr",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", str(vfr))
    times = np.array([f.time for f in decode(vfr, max_side=16)])
    expected = np.concatenate([np.arange(24) / 24, 1.0 + np.arange(30) / 60])
    assert times.shape == expected.shape and np.abs(times - expected).max() < 1e-3
    assert [round(f.time, 4) for f in decode(vfr, 23, 26, max_side=16)] == [0.9583, 1.0, 1.0167]


def test_max_side_scales_in_decoding_and_keeps_the_picture(stored):
    path, frames = stored
    small = np.stack([f.image for f in decode(path, max_side=24)])
    assert small.shape == (4, 16, 24, 3)
    # the area-averaged picture: within a few levels of the stored frames averaged 2x2
    pooled = frames.reshape(4, 16, 2, 24, 2, 3).astype(float).mean((2, 4))
    assert np.abs(small - pooled).mean() < 4
    assert sorted(frames_at(path, [3, 1])) == [1, 3]


def test_a_still_picture_named_like_a_video_is_not_a_video(tmp_path):
    """Finding 5: a JPEG named .mp4 decoded as a one-frame video (curation said `no_faces`)."""
    path = tmp_path / "photo.mp4"
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "48x32", "-i", "-", "-frames:v", "1", "-f", "image2", "-c:v", "mjpeg",
           str(path), stdin=pattern(1).tobytes())
    with pytest.raises(NotAVideoError, match=r"not a video: .*photo\.mp4 is a still picture"):
        read_video(path)


def test_every_video_reader_goes_through_the_decoding_layer():
    """Finding 2's fix holds only if no reader decodes video itself: outside the decoding layer, the
    packages open video only to write it (video_io.write_video), and none hands a file to OpenCV,
    imageio, scikit-video or PySceneDetect's own backends."""
    import re

    root = Path(__file__).resolve().parents[2]
    readers = re.compile(r"av\.open\(|cv2\.VideoCapture|\b(imageio|iio)(\.v[23])?\.(imread|imiter|get_reader|mimread)|skvideo\.io|"
                         r"scenedetect\.(detect|open_video)\(")
    found = []
    for package in ("ingredients", "eval", "instruments", "study", "experiments"):
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                writes = 'mode="w"' in line
                if readers.search(line) and not writes and rel != "ingredients/files/video_decode.py" and not line.lstrip().startswith("#"):
                    found.append(f"{rel}:{number}: {line.strip()}")
    assert found == [], found
