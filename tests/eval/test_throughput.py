"""Throughput of the dlib face metrics on a 49-frame 256 x 256 two-person video (pytest-benchmark).

Run with: .venv/bin/python -m pytest tests/eval/test_throughput.py -m "slow and benchmark" --benchmark-enable
"""

import pytest

from eval.baselines import oracle_frames
from eval.metrics import face_found, face_sim, face_sim_max, id_confusion
from eval.video_faces import analyze_frames, embed_reference

N_FRAMES = 49


@pytest.mark.slow
@pytest.mark.benchmark
def test_dlib_face_metrics_seconds_per_video(benchmark, dlib_analyzer, photos):
    frames = oracle_frames([photos["astronaut"], photos["grace"]], dlib_analyzer, n_frames=N_FRAMES, size=256)
    import numpy as np

    refs = np.stack([embed_reference(dlib_analyzer, photos[n]) for n in ("astronaut", "grace")])

    def all_face_metrics():
        faces = analyze_frames(dlib_analyzer, frames, refs)
        return {m.__name__: m.summarize(faces)[""] for m in (face_sim, face_sim_max, face_found, id_confusion)}

    out = benchmark.pedantic(all_face_metrics, rounds=2, iterations=1)
    assert out["eval.metrics.face_sim"] > 0.95 and out["eval.metrics.face_found"] == 1.0
