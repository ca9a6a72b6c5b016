"""facexlib's face crop: the reference code's detector, 512 px template and face parser.

Both reference implementations (PKU-YuanGroup/ConsisID `models/consisid_utils.py::process_face_embeddings`
and the Ingredients authors' feizc/Ingredients `models/utils.py::process_face_embeddings_split`)
crop the reference face with facexlib's `FaceRestoreHelper(upscale_factor=1, face_size=512,
crop_ratio=(1, 1), det_model="retinaface_resnet50")`:

- detection: RetinaFace-ResNet50 (`facexlib.detection.retinaface.RetinaFace`) on the BGR photo at
  its own size, score threshold 0.97, NMS 0.4; rows come out in score order;
- which face: ConsisID asks for `only_center_face=True` (the box whose centre is nearest the image
  centre, `get_center_face`), the Ingredients code for `only_center_face=False` and takes the first
  row (the highest score);
- alignment (`align_warp_face`): `cv2.estimateAffinePartial2D(landmarks, template, method=cv2.LMEDS)`
  onto the FFHQ 5-point template for 512 px, then `cv2.warpAffine(..., (512, 512),
  borderMode=cv2.BORDER_CONSTANT, borderValue=(135, 133, 132))`, bilinear. facexlib warps the BGR
  image, so that border is (132, 133, 135) in RGB;
- parsing (ConsisID only): BiSeNet (`facexlib.parsing.bisenet.BiSeNet(num_class=19)`) on the RGB
  crop in [0, 1] normalised with the ImageNet mean/std, `argmax` over the first output; labels
  0 background, 7/8 ears, 9 earring, 14 neck, 15 necklace, 16 cloth, 18 hat become white.

We build facexlib's own model classes and load their state dicts from local files ourselves:
facexlib's `init_detection_model` / `init_parsing_model` / `FaceRestoreHelper` download weights when
a file is missing (and the helper also loads ParseNet, which the reference never uses), so they
are never called here. A missing file is an error naming it and the command that fetches it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from ingredients.faces.base import Face
from ingredients.faces.image_io import check_rgb_array

logger = logging.getLogger(__name__)

# facexlib's file names (facexlib/detection/__init__.py, facexlib/parsing/__init__.py), as the
# reference's `model_rootpath=<model>/face_encoder` stores them
DETECTION_FILE = "detection_Resnet50_Final.pth"
PARSING_FILE = "parsing_bisenet.pth"
FACEXLIB_URLS = {
    DETECTION_FILE: "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
    PARSING_FILE: "https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth",
}
# facexlib/utils/face_restoration_helper.py: "standard 5 landmarks for FFHQ faces with 512 x 512"
FACEXLIB_TEMPLATE_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043],
     [313.08905, 371.15118]], dtype=np.float64)
BORDER_BGR = (135, 133, 132)
BORDER_RGB = BORDER_BGR[::-1]
DETECTION_THRESHOLD = 0.97  # get_face_landmarks_5 -> detect_faces(input_img, 0.97)
BACKGROUND_LABELS = (0, 16, 18, 7, 8, 9, 14, 15)  # ConsisID's bg_label
PARSE_MEAN = (0.485, 0.456, 0.406)
PARSE_STD = (0.229, 0.224, 0.225)
FACE_RULES = ("center", "first")


def fetch_hint(folder: str | Path) -> str:
    """The commands that put facexlib's weight files into `folder`."""
    commands = "; ".join(f"wget -P {folder} {url}" for url in FACEXLIB_URLS.values())
    return (f"fetch facexlib's weights into that folder: {commands} (the authors' released model folder "
            f"ships them in face_encoder/)")


def facexlib_template(size: int = 512) -> np.ndarray:
    """facexlib's 5 template points [5, 2] for a `size` x `size` crop (scaled from 512, as facexlib does)."""
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    return FACEXLIB_TEMPLATE_512 * (float(size) / 512.0)


def facexlib_alignment_matrix(landmarks: np.ndarray, size: int = 512) -> np.ndarray:
    """[2, 3] matrix taking image pixels onto facexlib's template: estimateAffinePartial2D with LMEDS."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (5, 2):
        raise ValueError(f"expected 5 landmarks [5, 2] (eyes, nose, mouth corners), got shape {landmarks.shape}")
    if not np.isfinite(landmarks).all():
        raise ValueError("landmarks contain NaN or infinite values")
    matrix = cv2.estimateAffinePartial2D(landmarks, facexlib_template(size), method=cv2.LMEDS)[0]
    if matrix is None or not np.isfinite(matrix).all():
        raise ValueError(f"no similarity transform fits these landmarks (degenerate?): {landmarks.tolist()}")
    return matrix


def align_facexlib(image: np.ndarray, landmarks: np.ndarray, size: int = 512) -> np.ndarray:
    """facexlib's `align_warp_face` on an RGB image: [size, size, 3] with facexlib's gray border."""
    image = check_rgb_array(image)
    matrix = facexlib_alignment_matrix(landmarks, size)
    return cv2.warpAffine(image, matrix, (int(size), int(size)), borderMode=cv2.BORDER_CONSTANT,
                          borderValue=BORDER_RGB)


def resize_long_edge(image: np.ndarray, long_edge: int | None) -> tuple[np.ndarray, tuple[float, float]]:
    """Shrink so that the longer side is at most `long_edge` (the reference's
    `resize_numpy_image_long`: int() sizes, Lanczos-4, never enlarges). Returns the image and the
    (x, y) factors that take its pixel coordinates back to the input's."""
    if long_edge is None:
        return image, (1.0, 1.0)
    height, width = image.shape[:2]
    if max(height, width) <= long_edge:
        return image, (1.0, 1.0)
    k = long_edge / max(height, width)
    new_h, new_w = int(height * k), int(width * k)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LANCZOS4)
    return resized, (width / new_w, height / new_h)


def select_facexlib_face(faces: Sequence[Face], height: int, width: int, rule: str) -> int:
    """Index of the face the reference crops: 'center' = facexlib's get_center_face (box centre
    nearest (w/2, h/2), the first on ties; ConsisID), 'first' = the first row, the highest score
    (the Ingredients code)."""
    if not faces:
        raise ValueError("no faces to choose from")
    if rule == "first":
        return 0
    if rule != "center":
        raise ValueError(f"facexlib face rule must be one of {', '.join(FACE_RULES)}, got {rule!r}")
    centre = np.array([width / 2, height / 2])
    dists = [float(np.linalg.norm(np.array([(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2]) - centre))
             for f in faces]
    return dists.index(min(dists))


def resolve_facexlib_dir(facexlib_dir: str | Path | None, model_dir: str | Path | None = None) -> Path:
    """The folder with facexlib's weight files.

    `facexlib_dir` when given; else derived from the insightface `model_dir`: the released layout
    keeps them in face_encoder/ beside models/antelopev2/, so `<root>/models/antelopev2` gives
    `<root>`, and a folder holding the files is taken as it is.
    """
    if facexlib_dir is not None:
        return Path(facexlib_dir).expanduser()
    if model_dir is None:
        raise ValueError(f"alignment 'facexlib' needs facexlib_dir: the folder with {DETECTION_FILE} and "
                         f"{PARSING_FILE} (the released model folder's face_encoder/)")
    base = Path(model_dir).expanduser()
    candidates = [base]
    if base.parent.name == "models":
        candidates.insert(0, base.parent.parent)
    for candidate in candidates:
        if (candidate / DETECTION_FILE).is_file():
            return candidate
    return candidates[0]


def weight_file(folder: str | Path, name: str) -> Path:
    """`folder / name`, or FileNotFoundError naming it and how to fetch it (never downloads)."""
    path = Path(folder) / name
    if not path.is_file():
        raise FileNotFoundError(f"facexlib weight file missing: {path}; {fetch_hint(folder)}")
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from ingredients.files.weights_file import read_weights

    state = read_weights(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    # facexlib's init_detection_model strips DataParallel's 'module.' prefix the same way
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}


def _load_into(model: torch.nn.Module, path: Path, what: str) -> torch.nn.Module:
    state = _read_state_dict(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not fit facexlib's {what}: {str(exc).splitlines()[0]} ...") from exc
    return model.eval()


def load_retinaface(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """facexlib's RetinaFace-ResNet50 with the state dict in `path` (detection_Resnet50_Final.pth)."""
    from facexlib.detection.retinaface import RetinaFace

    with warnings.catch_warnings():  # torchvision's notice about resnet50(pretrained=False) inside facexlib
        warnings.filterwarnings("ignore", message=".*(pretrained|weights).*", category=UserWarning)
        model = RetinaFace(network_name="resnet50", half=False, device=torch.device(device))
    return _load_into(model, Path(path), "RetinaFace-ResNet50").to(device)


def load_bisenet(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """facexlib's BiSeNet face parser (19 classes) with the state dict in `path` (parsing_bisenet.pth)."""
    from facexlib.parsing.bisenet import BiSeNet

    return _load_into(BiSeNet(num_class=19), Path(path), "BiSeNet(num_class=19)").to(device)


class FacexlibFaces:
    """facexlib's detector (+ its BiSeNet parser when `parsing`) from local weight files.

    folder: the folder with detection_Resnet50_Final.pth (and parsing_bisenet.pth when parsing).
    """

    name = "facexlib"

    def __init__(self, folder: str | Path, parsing: bool = False, device: str | torch.device = "cpu") -> None:
        self.folder = Path(folder)
        self.device = torch.device(device)
        self.model_files = {"detector": weight_file(self.folder, DETECTION_FILE)}
        if parsing:
            self.model_files["parser"] = weight_file(self.folder, PARSING_FILE)
        self.detector = load_retinaface(self.model_files["detector"], self.device)
        self.parser = load_bisenet(self.model_files["parser"], self.device) if parsing else None
        logger.info("facexlib RetinaFace-ResNet50%s loaded from %s", " and BiSeNet" if parsing else "", self.folder)

    @property
    def identity(self) -> dict:
        from ingredients.files.hashing import model_file_digests

        return {"backend": "facexlib", "files": model_file_digests(self.model_files),
                "threshold": DETECTION_THRESHOLD}

    @torch.no_grad()
    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 image, in RetinaFace's order (score, then NMS), at threshold 0.97."""
        image = check_rgb_array(image)
        rows = self.detector.detect_faces(np.ascontiguousarray(image[..., ::-1]), DETECTION_THRESHOLD)
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 15)  # [n, box 4 + score + 5 x (x, y)]
        return [Face(box=row[:4].copy(), landmarks=row[5:15].reshape(5, 2).copy(), score=float(row[4]))
                for row in rows]

    @torch.no_grad()
    def background(self, crops: np.ndarray) -> np.ndarray:
        """bool [N, S, S]: True where BiSeNet labels a crop pixel as background, cloth, hat, ears, neck."""
        if self.parser is None:
            raise RuntimeError("this FacexlibFaces was built without the parser (parsing=False)")
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
            raise ValueError(f"crops must be uint8 [N, S, S, 3], got {crops.dtype} {crops.shape}")
        from torchvision.transforms.functional import normalize

        pixels = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255.0  # RGB [N, 3, S, S]
        pixels = normalize(pixels, PARSE_MEAN, PARSE_STD).to(self.device)
        labels = self.parser(pixels)[0].argmax(dim=1)  # [N, S, S]
        mask = torch.zeros_like(labels, dtype=torch.bool)
        for label in BACKGROUND_LABELS:
            mask |= labels == label
        return mask.cpu().numpy()
