"""Peak memory and time of curating one single-shot video of a given size and length (issue 30).

`python -m instruments.curation_footprint --width 640 --height 360 --seconds 10 --work DIR` makes the
video (a synthesised face, vid_000 of the tiny data, resized and played forth and back at 25 fps,
streamed into ffmpeg's CLI one frame at a time), then runs the curate stage's command on it (`python -m
ingredients.data.curate --raw ... --params ...` with the tiny profile's curate settings: dlib,
landmark masks) in a child process and prints one JSON line: the child's peak RSS and CPU seconds
(`wait4`), wall seconds, and the clips it kept.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

logger = logging.getLogger(__name__)

# the tiny profile's curate settings (params.yaml), without the keys a settings default covers
CURATE = {"analyzer": "dlib", "analyzer_options": {"dlib": {"upsample": 1}}, "shot_detector": "content", "shot_threshold": 27.0,
          "min_scene_frames": 3, "detect_stride": 1, "min_face_size": 60.0, "min_visible_fraction": 0.5, "max_identities": 3,
          "min_clip_frames": 8, "masker": "landmarks", "num_workers": 1, "contact_sheet_clips": 8}


def make_video(path: Path, width: int, height: int, seconds: float, rate: int = 25) -> Path:
    """A single shot of one synthesised person, width x height, `seconds` long (H.264 by ffmpeg's CLI)."""
    import cv2
    import imageio_ffmpeg

    from ingredients.data.synth import synthesize
    from ingredients.files.video_io import read_video

    raw = path.parent / "synth"
    if not (raw / "vid_000.mp4").is_file():
        synthesize(raw, seed=0, indices=[0])
    source, _ = read_video(raw / "vid_000.mp4")  # [24, 256, 384, 3]
    loop = np.concatenate([source, source[-2:0:-1]])  # forth and back: one shot, no cut
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{width}x{height}", "-r", str(rate), "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", str(path)]
    partial = path.with_name(f".{path.name}.partial.mp4")  # a killed run leaves no video that looks whole
    cmd[-1] = str(partial)
    with subprocess.Popen(cmd, stdin=subprocess.PIPE) as proc:
        for i in range(int(round(seconds * rate))):
            frame = cv2.resize(loop[i % len(loop)], (width, height), interpolation=cv2.INTER_CUBIC)
            proc.stdin.write(frame.tobytes())
        proc.stdin.close()
    if proc.returncode:
        raise RuntimeError(f"ffmpeg failed making {path}")
    partial.replace(path)
    path.with_suffix(".txt").write_text("a person talks to the camera\n")
    return path


def measure(video: Path, out: Path, params: Path) -> dict:
    """Run the curate stage's command on the folder of `video`; peak RSS of the child and wall time."""
    t0 = time.perf_counter()
    log = out.parent / f"{out.name}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "ingredients.data.curate", "--raw", str(video.parent), "--out", str(out),
                                 "--params", str(params)], stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own usage (not ffmpeg's, which made the video)
    wall = time.perf_counter() - t0
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else {}
    return {"returncode": os.waitstatus_to_exitcode(status), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3),
            "wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "clips": report.get("clips", {}).get("kept"),
            "frames": report.get("throughput", {}).get("frames"), "log": str(log)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--work", type=Path, required=True, help="folder for the video and the curated output")
    parser.add_argument("--tag", default="curated", help="name of the output folder beside the video's (replaced)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    name = f"{args.width}x{args.height}_{args.seconds:g}s"
    raw = args.work / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    video = raw / f"{name}.mp4"
    if not video.is_file():
        make_video(video, args.width, args.height, args.seconds)
    params = args.work / "params.yaml"
    params.write_text(yaml.safe_dump({"curate": CURATE}))
    out = args.work / name / args.tag
    shutil.rmtree(out, ignore_errors=True)  # a fresh run, never a resumed one
    result = {"video": name, "tag": args.tag, **measure(video, out, params)}
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
