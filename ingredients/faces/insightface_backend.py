"""The full-profile face backend: insightface `antelopev2` (SCRFD-10G detector + glintr100 recognizer).

The model folder is read with insightface's own model zoo (`insightface.model_zoo.get_model`, which
routes each ONNX file to SCRFD / ArcFaceONNX by its input and output shapes); nothing is ever
downloaded. Detection returns SCRFD's boxes and 5 keypoints (already in insightface order);
alignment is `insightface.utils.face_align.norm_crop` (for sizes that are multiples of 112, else the
same template scaled); embeddings are glintr100's 512-d output, L2-normalised (`embed_face(...,
normalize=False)` gives the raw vector that the reference code concatenates into id_cond, the same
as insightface's `FaceAnalysis.get(...)["embedding"]`; `embed_crop` embeds a facexlib crop the way
the reference's `get_feat(align_face)` does).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import cv2
import numpy as np

from ingredients.faces.alignment import align_to_template
from ingredients.faces.base import Face
from ingredients.faces.image_io import check_rgb_array

logger = logging.getLogger(__name__)

DETECTOR_FILE = "scrfd_10g_bnkps.onnx"
RECOGNIZER_FILE = "glintr100.onnx"
MODEL_PACK = "antelopev2"
FETCH_HINT = ("these files come from insightface's antelopev2 model pack: download "
              "https://github.com/deepinsight/insightface/releases/download/v0.7/antelopev2.zip and unzip it "
              "so that the folder holds the .onnx files, or `hf download DIAMONIK7777/antelopev2 "
              "--local-dir <root>/models/antelopev2`")
# Same-person cosine threshold for glintr100 on ArcFace crops. Tools built on insightface use values
# between about 0.28 and 0.4; 0.3 is a common choice. NOT calibrated here: no real weights are
# available on the development machine; calibrate on your data for verification-critical uses.
INSIGHTFACE_COSINE_THRESHOLD = 0.3


def resolve_model_dir(model_dir: str | Path) -> Path:
    """The folder holding the antelopev2 .onnx files.

    Accepts the folder itself, an insightface root (`<root>/models/antelopev2`), or the doubly nested
    folder that unzipping `antelopev2.zip` inside `antelopev2/` produces (`antelopev2/antelopev2`).
    """
    base = Path(model_dir).expanduser()
    for candidate in (base, base / "models" / MODEL_PACK, base / MODEL_PACK, base / MODEL_PACK / MODEL_PACK):
        if (candidate / DETECTOR_FILE).is_file() or (candidate / RECOGNIZER_FILE).is_file():
            return candidate
    return base


class InsightFaceAnalyzer:
    """FaceAnalyzer on an antelopev2-layout folder read by insightface's model zoo.

    model_dir: the antelopev2 folder (see resolve_model_dir). det_size: SCRFD input side (the image is
    letterboxed into det_size x det_size; 640 as in the reference). det_thresh: score threshold.
    providers: onnxruntime execution providers.
    """

    name = "insightface"
    verification_threshold = INSIGHTFACE_COSINE_THRESHOLD

    def __init__(self, model_dir: str | Path, det_size: int = 640, det_thresh: float = 0.5,
                 providers: tuple[str, ...] | list[str] = ("CPUExecutionProvider",),
                 detector_file: str = DETECTOR_FILE, recognizer_file: str = RECOGNIZER_FILE) -> None:
        from insightface.model_zoo import get_model
        from insightface.model_zoo.arcface_onnx import ArcFaceONNX
        from insightface.model_zoo.scrfd import SCRFD

        self.model_dir = resolve_model_dir(model_dir)
        paths = {"detector": self.model_dir / detector_file, "recognizer": self.model_dir / recognizer_file}
        for role, path in paths.items():
            if not path.is_file():
                raise FileNotFoundError(f"insightface {role} file missing: {path}; {FETCH_HINT}")
        self.det_size = int(det_size)
        self.det_thresh = float(det_thresh)
        self.providers = list(providers)
        self.model_files = paths
        self._detector = get_model(str(paths["detector"]), providers=self.providers)
        self._recognizer = get_model(str(paths["recognizer"]), providers=self.providers)
        if not isinstance(self._detector, SCRFD):
            raise ValueError(f"{paths['detector']} is not an SCRFD detector for insightface's model zoo "
                             f"(got {type(self._detector).__name__}); it needs >= 5 outputs (score/bbox/kps per stride)")
        if not isinstance(self._recognizer, ArcFaceONNX):
            raise ValueError(f"{paths['recognizer']} is not an ArcFace-style recognizer for insightface's model zoo "
                             f"(got {type(self._recognizer).__name__}); it needs a square input >= 112 divisible by 16")
        if not self._detector.use_kps:
            raise ValueError(f"{paths['detector']} has no keypoint outputs; alignment needs SCRFD's 5 keypoints "
                             f"(use the *_bnkps / *_kps variant)")
        self._detector.prepare(-1, input_size=(self.det_size, self.det_size), det_thresh=self.det_thresh)
        self._recognizer.prepare(-1)
        self.embedding_dim = int(self._recognizer.output_shape[-1])
        self.recognizer_size = int(self._recognizer.input_size[0])

    @property
    def identity(self) -> dict:
        """What determines this backend's outputs (for cache keys); hashes the ONNX files once."""
        from ingredients.files.hashing import model_file_digests

        return {"backend": self.name, "files": model_file_digests(self.model_files), "det_size": self.det_size, "det_thresh": self.det_thresh}

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 image, highest score first (SCRFD runs on BGR, as insightface expects)."""
        image = check_rgb_array(image)
        bgr = np.ascontiguousarray(image[..., ::-1])
        boxes, keypoints = self._detector.detect(bgr, input_size=(self.det_size, self.det_size))
        faces = []
        for i in range(boxes.shape[0]):
            faces.append(Face(box=boxes[i, :4].astype(np.float64), landmarks=keypoints[i].astype(np.float64),
                              score=float(boxes[i, 4])))
        faces.sort(key=lambda f: -f.score)
        return faces

    def align(self, image: np.ndarray, face: Face, size: int = 112) -> np.ndarray:
        """norm_crop onto the ArcFace template (multiples of 112), else the template scaled to `size`."""
        from insightface.utils.face_align import norm_crop

        image = check_rgb_array(image)
        landmarks = np.asarray(face.landmarks, dtype=np.float64)
        if landmarks.shape != (5, 2):
            raise ValueError(f"expected 5 landmarks [5, 2], got {landmarks.shape}")
        if size % 112 == 0:
            with warnings.catch_warnings():  # skimage >= 0.26 deprecates the estimate() norm_crop calls
                warnings.filterwarnings("ignore", message=".*estimate.* is deprecated", category=FutureWarning)
                return norm_crop(image, landmarks.astype(np.float32), image_size=size)
        return align_to_template(image, landmarks, size)

    def _vector(self, aligned: np.ndarray, normalize: bool, resize: bool = True) -> np.ndarray:
        aligned = check_rgb_array(aligned, "aligned crop")
        size = self.recognizer_size
        if aligned.shape[0] != aligned.shape[1]:
            raise ValueError(f"aligned crop must be square, got {aligned.shape}; use align(image, face, {size})")
        if resize and aligned.shape[0] != size:
            aligned = cv2.resize(aligned, (size, size), interpolation=cv2.INTER_AREA)
        # get_feat takes BGR; blobFromImages swaps to RGB, resizes (bilinear) to the input size if needed
        raw = np.asarray(self._recognizer.get_feat(np.ascontiguousarray(aligned[..., ::-1])), dtype=np.float64)
        vector = raw.reshape(-1)
        norm = float(np.linalg.norm(vector))
        if vector.shape != (self.embedding_dim,) or not np.isfinite(vector).all() or norm == 0.0:
            raise RuntimeError(f"recognizer {self.model_files['recognizer']} returned an unusable vector "
                               f"(shape {vector.shape}, norm {norm})")
        return (vector / norm if normalize else vector).astype(np.float32)

    def embed(self, aligned: np.ndarray) -> np.ndarray:
        """L2-normalised identity vector of an ArcFace-aligned RGB crop (resized to 112 if needed)."""
        return self._vector(aligned, normalize=True)

    def embed_face(self, image: np.ndarray, face: Face, normalize: bool = True) -> np.ndarray:
        """Identity vector of `face`: norm_crop at the recognizer's input size, then glintr100."""
        return self._vector(self.align(image, face, self.recognizer_size), normalize=normalize)

    def embed_crop(self, crop: np.ndarray, normalize: bool = True) -> np.ndarray:
        """Identity vector of a square face crop of any size and framing, handed to glintr100 as it is.

        This is the reference's embedding of the 512 px facexlib crop (ConsisID's fallback when
        insightface finds no face; always, in the Ingredients code): `get_feat(align_face)`, whose
        `cv2.dnn.blobFromImages` resizes the BGR crop to 112 bilinearly, swaps it to RGB and scales
        it by (x - 127.5) / 127.5. The raw output when normalize=False.
        """
        return self._vector(crop, normalize=normalize, resize=False)
