"""The offline face backend: dlib's HOG detector, 5-point shape predictor and 128-d ResNet recognizer.

Weights are the real ones shipped by the `face-recognition-models` package (the recognizer reaches
99.38 % on LFW); the package folder is found with importlib, without importing the package (its
`__init__` needs pkg_resources).

Landmarks. dlib's 5-point model marks, in image coordinates: part 0 / 1 = outer / inner corner of
the eye on the image's right, part 2 / 3 = outer / inner corner of the eye on the image's left,
part 4 = the base of the nose (top of the philtrum). insightface order is (image-left eye centre,
image-right eye centre, nose tip, image-left mouth corner, image-right mouth corner). We map:
- eye centres: measured, the midpoint of each eye's two corners (parts 2+3, parts 0+1);
- nose tip and mouth corners: ESTIMATED, not measured. dlib's mean face (the 68-point mean shape in
  dlib's `get_face_chip_details`, the frame its 5-point template lives in) gives their positions;
  a least-squares similarity fit of the 5 detected parts to dlib's 5-point template places that mean
  face on the photo. An open mouth or a turned head therefore moves the estimates only as far as
  the rigid fit follows. Against dlib's 68-point model on the packaged photos the estimates are off
  by about 0.2-0.25 inter-ocular distances on average (eyes: 0.05). `landmark_model="68pt"` instead
  measures all five with the 68-point predictor (eye centres = mean of each eye's 6 points, nose tip
  = point 30, mouth corners = points 48 and 54), at the cost of loading its 100 MB model.

Embedding. `embed_face(image, face)` uses dlib's own chip extraction (150 x 150, padding 0.25) from
the full photo: on the packaged test photos it gives the largest verification margin (same-person
minus different-person cosine: 0.064, against 0.054 for `embed` on a 112 x 112 ArcFace-aligned
crop, which we warp into dlib's chip geometry, losing the chin area the tighter ArcFace crop cuts
off). Both are L2-normalised.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import cv2
import numpy as np

from ingredients.faces.alignment import align_to_template, arcface_template, similarity_transform
from ingredients.faces.base import Face
from ingredients.faces.image_io import check_rgb_array
from ingredients.files.hashing import model_file_digests

logger = logging.getLogger(__name__)

SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
SHAPE_PREDICTOR_68_FILE = "shape_predictor_68_face_landmarks.dat"
RECOGNIZER_FILE = "dlib_face_recognition_resnet_model_v1.dat"

# dlib's 5-point template in its unit face frame (dlib/image_transforms/interpolation.h,
# get_face_chip_details): parts 0..4 as described in the module docstring.
DLIB_5PT_TEMPLATE = np.array(
    [[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
     [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
     [0.4901123135679, 0.6277975316475]],
    dtype=np.float64,
)
# dlib's 68-point mean face, same unit frame: points 36-41 (image-left eye), 42-47 (image-right eye)
_MEAN_LEFT_EYE = np.array([[0.121737, 0.216423], [0.187122, 0.178758], [0.265825, 0.179852],
                           [0.334606, 0.231733], [0.260918, 0.245099], [0.182743, 0.244077]])
_MEAN_RIGHT_EYE = np.array([[0.645647, 0.231733], [0.714428, 0.179852], [0.793132, 0.178758],
                            [0.858516, 0.216423], [0.79751, 0.244077], [0.719335, 0.245099]])
# insightface-order points of dlib's mean face: eye centres, nose tip (pt 30), mouth corners (48, 54)
MEAN_FACE_5PT = np.array(
    [_MEAN_LEFT_EYE.mean(0), _MEAN_RIGHT_EYE.mean(0), [0.490127, 0.515625],
     [0.254149, 0.780233], [0.726104, 0.780233]],
    dtype=np.float64,
)

CHIP_SIZE = 150  # the recognizer's input, dlib's chip with padding 0.25
CHIP_PADDING = 0.25

# dlib documents 0.6 as the same-person threshold on the Euclidean distance of its (unnormalised)
# descriptors. Their norm is nearly constant: 1.45 on average over the 14 faces of the packaged test
# photos (range 1.36-1.59). For two vectors of norm n, d^2 = 2 n^2 (1 - cos), so d = 0.6 becomes
# cos = 1 - (0.6 / 1.45)^2 / 2 = 0.914 for the L2-normalised vectors this backend returns.
DLIB_DISTANCE_THRESHOLD = 0.6
DLIB_TYPICAL_DESCRIPTOR_NORM = 1.45
DLIB_COSINE_THRESHOLD = 1.0 - 0.5 * (DLIB_DISTANCE_THRESHOLD / DLIB_TYPICAL_DESCRIPTOR_NORM) ** 2


def default_model_dir() -> Path:
    """The `models/` folder of the installed face_recognition_models package (not imported)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the dlib face models are not installed: `face_recognition_models` was not found; "
            "install them with `.venv/bin/pip install face-recognition-models==0.3.0`"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"



def _chip_from_unit(size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """[3, 3] map from dlib's unit face frame to its chip pixels (size, padding as dlib uses them)."""
    scale = size / (1.0 + 2.0 * padding)
    return np.array([[scale, 0.0, padding * scale], [0.0, scale, padding * scale], [0.0, 0.0, 1.0]])


# ArcFace-112 frame -> dlib chip frame, through dlib's mean face (fixed, computed once)
_UNIT_TO_ARCFACE = similarity_transform(MEAN_FACE_5PT, arcface_template(112))
ARCFACE112_TO_CHIP = _chip_from_unit() @ np.linalg.inv(_UNIT_TO_ARCFACE)


def dlib_parts_to_landmarks(parts: np.ndarray) -> np.ndarray:
    """dlib 5-point parts [5, 2] -> insightface-order landmarks [5, 2] (see the module docstring)."""
    parts = np.asarray(parts, dtype=np.float64)
    if parts.shape != (5, 2):
        raise ValueError(f"expected dlib's 5 parts [5, 2], got {parts.shape}")
    unit_to_image = np.linalg.inv(similarity_transform(parts, DLIB_5PT_TEMPLATE))
    landmarks = MEAN_FACE_5PT @ unit_to_image[:2, :2].T + unit_to_image[:2, 2]
    landmarks[0] = parts[2:4].mean(0)
    landmarks[1] = parts[0:2].mean(0)
    return landmarks


class DlibFaceAnalyzer:
    """FaceAnalyzer on dlib: HOG detection, 5-point landmarks, 128-d ResNet identity vectors.

    upsample: times the image is doubled before HOG detection (0 finds faces >= ~80 px, 1 >= ~40 px,
    each step about 4x slower). min_score: HOG score threshold (dlib's default 0; raise to drop
    weak detections). num_jitters: dlib's test-time augmentation for embeddings (0 = off).
    landmark_model: "5pt" (nose tip and mouth corners estimated) or "68pt" (all measured).
    model_dir: folder holding the .dat files (default: the face_recognition_models package).
    """

    name = "dlib"
    embedding_dim = 128
    verification_threshold = DLIB_COSINE_THRESHOLD

    def __init__(self, upsample: int = 1, min_score: float = 0.0, num_jitters: int = 0,
                 landmark_model: str = "5pt", model_dir: str | Path | None = None) -> None:
        import dlib

        if int(upsample) < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        if landmark_model not in ("5pt", "68pt"):
            raise ValueError(f"landmark_model must be '5pt' or '68pt', got {landmark_model!r}")
        self.landmark_model = landmark_model
        self.upsample = int(upsample)
        self.min_score = float(min_score)
        self.num_jitters = int(num_jitters)
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        files = {}
        needed = [("shape", SHAPE_PREDICTOR_FILE), ("rec", RECOGNIZER_FILE)]
        if landmark_model == "68pt":
            needed.append(("shape68", SHAPE_PREDICTOR_68_FILE))
        for key, filename in needed:
            path = self.model_dir / filename
            if not path.is_file():
                raise FileNotFoundError(
                    f"dlib model file missing: {path}; it ships with the face-recognition-models package "
                    f"(`.venv/bin/pip install face-recognition-models==0.3.0`) or can be fetched from "
                    f"http://dlib.net/files/{filename}.bz2"
                )
            files[key] = path
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(files["shape"]))
        self._recognizer = dlib.face_recognition_model_v1(str(files["rec"]))
        self._shape68 = dlib.shape_predictor(str(files["shape68"])) if "shape68" in files else None
        self.model_files = files

    @property
    def identity(self) -> dict:
        """What determines this backend's outputs (for cache keys): versions, model file hashes, options."""
        return {
            "backend": self.name,
            "dlib": self._dlib.__version__,
            "files": model_file_digests(self.model_files),
            "upsample": self.upsample,
            "min_score": self.min_score,
            "num_jitters": self.num_jitters,
            "landmark_model": self.landmark_model,
        }

    def _parts(self, image: np.ndarray, rect) -> np.ndarray:
        shape = self._shape(image, rect)
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], dtype=np.float64)

    def _landmarks68(self, image: np.ndarray, rect) -> np.ndarray:
        shape = self._shape68(image, rect)
        points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)
        return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])

    def _rect(self, face: Face):
        x0, y0, x1, y1 = (int(round(float(v))) for v in face.box)
        return self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 image, highest HOG score first; box = (left, top, right+1, bottom+1)."""
        image = check_rgb_array(image)
        rects, scores, _ = self._detector.run(image, self.upsample, self.min_score)
        faces = []
        for rect, score in zip(rects, scores):
            if self._shape68 is not None:
                landmarks = self._landmarks68(image, rect)
            else:
                landmarks = dlib_parts_to_landmarks(self._parts(image, rect))
            box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float64)
            faces.append(Face(box=box, landmarks=landmarks, score=float(score)))
        faces.sort(key=lambda f: -f.score)
        return faces

    def align(self, image: np.ndarray, face: Face, size: int = 112) -> np.ndarray:
        """5-point similarity warp onto the ArcFace template scaled to `size`; uint8 [size, size, 3]."""
        return align_to_template(check_rgb_array(image), face.landmarks, size)

    def _descriptor(self, raw: np.ndarray, normalize: bool) -> np.ndarray:
        vector = np.asarray(raw, dtype=np.float64).reshape(-1)
        norm = float(np.linalg.norm(vector))
        if vector.shape != (self.embedding_dim,) or not np.isfinite(vector).all() or norm == 0.0:
            raise RuntimeError(f"dlib recognizer returned an unusable descriptor (shape {vector.shape}, norm {norm})")
        return (vector / norm if normalize else vector).astype(np.float32)

    def embed(self, aligned: np.ndarray, normalize: bool = True) -> np.ndarray:
        """128-d vector of an ArcFace-aligned square crop of any size (warped into dlib's chip)."""
        aligned = check_rgb_array(aligned, "aligned crop")
        size = aligned.shape[0]
        if aligned.shape[1] != size:
            raise ValueError(f"aligned crop must be square, got {aligned.shape}; use align(image, face, size)")
        to_chip = ARCFACE112_TO_CHIP @ np.diag([112.0 / size, 112.0 / size, 1.0])
        chip = cv2.warpAffine(aligned, to_chip[:2], (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR, borderValue=0.0)
        raw = self._recognizer.compute_face_descriptor(np.ascontiguousarray(chip), self.num_jitters)
        return self._descriptor(raw, normalize)

    def embed_face(self, image: np.ndarray, face: Face, normalize: bool = True) -> np.ndarray:
        """128-d vector of `face` using dlib's own chip extraction from the full image (the better path).

        The 5 parts are recomputed by the shape predictor inside `face.box`, so faces from another
        detector work too.
        """
        image = check_rgb_array(image)
        shape = self._shape(image, self._rect(face))
        raw = self._recognizer.compute_face_descriptor(image, shape, self.num_jitters, CHIP_PADDING)
        return self._descriptor(raw, normalize)
