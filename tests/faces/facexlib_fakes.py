"""facexlib's models with random weights, saved as the state-dict .pth files facexlib loads.

The RetinaFace-ResNet50 keeps its random backbone, but its three heads are set so that its output
is known whatever the image: every prior scores 0.0067 except the 512 px anchors of stride 32,
which score 0.9999 (above the reference's 0.97); their boxes are the priors themselves and their 5
landmarks sit at LANDMARK_OFFSETS pixels from the prior centre. The 512 px boxes overlap by more
than NMS's 0.4 on images up to 160 x 128, so exactly one face comes out, at one of the stride-32
cell centres (16 + 32 j, 16 + 32 i). With fires=False nothing scores above 0.5.
The BiSeNet parser is random (seeded): its labels are a deterministic mix of classes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ingredients.faces.facexlib_alignment import DETECTION_FILE, PARSING_FILE

PARSENET_FILE = "parsing_parsenet.pth"  # what facexlib's FaceRestoreHelper also loads (never used)
BIG_ANCHOR = 512.0
LANDMARK_OFFSETS = np.array([[-16.0, -12.0], [16.0, -12.0], [0.0, 4.0], [-12.0, 20.0], [12.0, 20.0]])


def fake_retinaface_state(seed: int = 0, fires: bool = True) -> dict[str, torch.Tensor]:
    from facexlib.detection.retinaface import RetinaFace

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        model = RetinaFace(network_name="resnet50", half=False, device="cpu")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for level in range(3):  # channels per anchor: class 2, box 4, landmarks 10; anchors (small, big)
        for head in ("ClassHead", "BboxHead", "LandmarkHead"):
            state[f"{head}.{level}.conv1x1.weight"].zero_()
            state[f"{head}.{level}.conv1x1.bias"].zero_()
        big = (-5.0, 5.0) if (fires and level == 2) else (5.0, -5.0)
        state[f"ClassHead.{level}.conv1x1.bias"].copy_(torch.tensor([5.0, -5.0, *big]))
    # decode_landm: centre + bias * variance 0.1 * prior size
    state["LandmarkHead.2.conv1x1.bias"][10:] = torch.tensor(LANDMARK_OFFSETS.reshape(-1) / (0.1 * BIG_ANCHOR))
    return state


def fake_bisenet_state(seed: int = 0) -> dict[str, torch.Tensor]:
    from facexlib.parsing.bisenet import BiSeNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BiSeNet(num_class=19).state_dict()


def write_fake_facexlib(folder: Path, seed: int = 0, fires: bool = True, parsing: bool = True,
                        parsenet: bool = False, prefix: str = "") -> Path:
    """Write detection_Resnet50_Final.pth (+ parsing_bisenet.pth, + parsing_parsenet.pth for
    FaceRestoreHelper) into `folder`; `prefix` ('module.') mimics a DataParallel checkpoint."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = fake_retinaface_state(seed, fires)
    torch.save({prefix + k: v for k, v in state.items()}, folder / DETECTION_FILE)
    if parsing:
        torch.save(fake_bisenet_state(seed), folder / PARSING_FILE)
    if parsenet:
        from facexlib.parsing.parsenet import ParseNet

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ParseNet(in_size=512, out_size=512, parsing_ch=19)
        # half precision keeps the file small; load_state_dict casts it back (only FaceRestoreHelper reads it)
        torch.save({k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()},
                   folder / PARSENET_FILE)
    return folder


def dots_image(width: int, height: int, points: np.ndarray, radius: int = 2) -> np.ndarray:
    """Gray RGB image with a distinct saturated colour disc at each of the 5 points."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    image = np.full((height, width, 3), 90, np.uint8)
    yy, xx = np.mgrid[:height, :width]
    for (x, y), colour in zip(points, colours):
        image[(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = colour
    return image


def colour_centroids(image: np.ndarray) -> np.ndarray:
    """[5, 2] centroids (x, y) of the 5 dot colours of dots_image, found by colour."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    image = image.astype(np.int64)
    out = []
    for colour in colours:
        weight = np.clip(1.0 - np.abs(image - np.array(colour)).sum(-1) / 150.0, 0.0, None)  # [H, W]
        ys, xs = np.mgrid[:image.shape[0], :image.shape[1]]
        out.append([(weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()])
    return np.array(out)
