"""face_sim_max in the authors' protocol (feizc/Ingredients metric/face_sim_fid.py): 24 frames at
np.linspace, the 2 largest faces per frame, max cosine over all (reference, face) pairs, no clamp,
through the metric's compute() on a fixture with 3 faces per frame."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from eval.context import VideoContext
from eval.face_backends import AnalyzerPool
from eval.metrics import face_sim_max
from eval.params import EvalParams
from ingredients.faces.base import Face
from ingredients.sampling.benchmark import Case

E = np.eye(4, dtype=np.float32)
NEG = -(E[0] + E[1]) / np.sqrt(2)  # cosine -0.707 with both references
REF_CODE = 200  # reference image k is filled with REF_CODE + k; video frame t with t


def box(x: float, side: float) -> np.ndarray:
    return np.array([x, 0, x + side, side], dtype=np.float32)


# per image code: [(box, embedding)] in detection order
FACES = {
    REF_CODE: [(box(0, 100), E[0])],
    REF_CODE + 1: [(box(0, 100), E[1])],
    # frame 0: the smallest face is the perfect match to reference 0; the 2 largest score 0.6 at best
    0: [(box(0, 20), E[0]), (box(50, 60), 0.6 * E[0] + 0.8 * E[2]), (box(150, 40), -E[1])],
    # frame 1: every face is dissimilar to both references: negative cosines, not clamped
    1: [(box(0, 50), NEG), (box(100, 50), NEG), (box(200, 10), NEG)],
}


class ThreeFaces:
    """A fake backend: faces and embeddings looked up from the image's code (its first pixel)."""

    name = "fake"
    embedding_dim = 4
    verification_threshold = 0.5

    def detect(self, image):
        return [Face(b, np.zeros((5, 2)), 1.0) for b, _ in FACES[int(image[0, 0, 0])]]

    def embed_face(self, image, face):
        for b, emb in FACES[int(image[0, 0, 0])]:
            if np.array_equal(b, face.box):
                return emb
        raise AssertionError("unknown face")

    def align(self, image, face, size=112):
        raise AssertionError("not used")

    def embed(self, aligned):
        raise AssertionError("not used")


def context(tmp_path, stride: int) -> VideoContext:
    refs = []
    for k in range(2):
        path = tmp_path / f"ref{k}.png"
        Image.fromarray(np.full((8, 8, 3), REF_CODE + k, dtype=np.uint8)).save(path)
        refs.append(path)
    case = Case("c", "two people", tuple(refs), 0)
    ctx = VideoContext("m", tmp_path, case, EvalParams(face_backends=("fake",), face_frame_stride=stride),
                       AnalyzerPool(analyzers={"fake": ThreeFaces()}))
    ctx.__dict__["frames"] = np.stack([np.full((8, 8, 3), t, dtype=np.uint8) for t in range(2)])  # [F=2, H, W, 3]
    return ctx


@pytest.mark.parametrize("stride", [1, 2])  # stride 2: frame 1 is detected by the metric itself
def test_authors_protocol_on_three_faces_per_frame(tmp_path, stride):
    result = face_sim_max.compute(context(tmp_path, stride))
    # linspace(0, 1, 24, dtype=int): frame 0 23 times, frame 1 once; frame 0 scores 0.6 (its best
    # face is the third largest, dropped), frame 1 scores -0.707 (no clamp). Over all faces, clamped,
    # skipping nothing the old variant gave (1.0 + 0.0) / 2 = 0.5.
    expected = (23 * 0.6 + NEG @ E[0]) / 24
    assert result.values["face_sim_max/fake"] == pytest.approx(expected, abs=1e-6)
    assert result.missing == {}


def test_largest_two_is_a_stable_sort_by_area():
    boxes = np.stack([box(0, 30), box(0, 10), box(0, 30), box(0, 20)])
    assert face_sim_max.largest_two(boxes).tolist() == [0, 2]  # equal areas: the later one last
    assert face_sim_max.sample_indices(49).tolist()[:3] == [0, 2, 4] and len(face_sim_max.sample_indices(49)) == 24


class SizedFaces(ThreeFaces):
    """The fake as the insightface backend at a detector size: at 320 it finds other faces (here:
    one face per frame, the reference's own embedding) than at 640 (FACES)."""

    name = "insightface"

    def __init__(self, det_size: int) -> None:
        self.det_size = det_size
        self.detections = 0

    def _faces(self, image):
        code = int(image[0, 0, 0])
        if self.det_size == 320:
            return [(box(0, 100), E[code - REF_CODE])] if code >= REF_CODE else [(box(30, 50), E[code])]
        return FACES[code]

    def detect(self, image):
        self.detections += 1
        return [Face(b, np.zeros((5, 2)), 1.0) for b, _ in self._faces(image)]

    def embed_face(self, image, face):
        return next(emb for b, emb in self._faces(image) if np.array_equal(b, face.box))


def insightface_context(tmp_path, analyzers: dict) -> VideoContext:
    ctx = context(tmp_path, 1)
    ctx.params = EvalParams(face_backends=("insightface",))
    ctx.analyzers = AnalyzerPool(analyzers=analyzers)
    return ctx


def test_insightface_scores_at_the_scripts_det_size_320_whatever_the_configured_size(tmp_path):
    """The script prepares FaceAnalysis at det_size (320, 320); the face analysis here ran at the
    backend's configured 640 and face_sim_max took its faces."""
    at640, at320 = SizedFaces(640), SizedFaces(320)
    ctx = insightface_context(tmp_path, {"insightface": at640, "insightface[det_size=320]": at320})
    result = face_sim_max.compute(ctx)
    # at 320: frame 0 holds reference 0's face (1.0), frame 1 reference 1's (1.0); at 640 it was (23 * 0.6 - 0.707) / 24
    assert result.values == {"face_sim_max/insightface": pytest.approx(1.0)}
    assert at320.detections == 2 + 2 and at640.detections == 0  # 2 references + 2 distinct frames, all at 320
    # a backend configured at 320 already is the protocol's own: no second analyzer is built
    same = SizedFaces(320)
    assert AnalyzerPool(analyzers={"insightface": same}).get("insightface", det_size=320) is same
    assert face_sim_max.compute(insightface_context(tmp_path, {"insightface": same})).values == {
        "face_sim_max/insightface": pytest.approx(1.0)}


def test_the_320_analyzer_is_built_from_the_configured_options(tmp_path, monkeypatch):
    """The variant keeps every configured option (model folder, files) and replaces det_size only."""
    import ingredients.faces.registry as registry

    built = []
    monkeypatch.setattr(registry, "build_analyzer", lambda name, **opts: built.append((name, opts)) or SizedFaces(opts.get("det_size", 640)))
    pool = AnalyzerPool(options={"insightface": {"model_dir": "w/buffalo_l", "det_size": 640}})
    assert pool.get("insightface", det_size=320).det_size == 320
    assert built == [("insightface", {"model_dir": "w/buffalo_l", "det_size": 640}),
                     ("insightface", {"model_dir": "w/buffalo_l", "det_size": 320})]
