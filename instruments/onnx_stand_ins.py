"""Stand-ins for insightface's antelopev2 ONNX files, with the real models' input and output signatures.

Exported with torch.onnx into the antelopev2 folder layout, so insightface's own loading code
(model routing by input/output shapes, SCRFD decoding, ArcFace `get_feat`) runs on them unchanged.
Used by the tests and by the full profile's rehearsal tree (instruments.rehearsal).

The detector follows SCRFD-10G-BNKPS's output layout as insightface's SCRFD reads it: 9 outputs,
score / bbox / kps for strides 8, 16, 32, two anchors per cell, no batch axis, dynamic H and W.
Its "faces" are white 8 x 8 cells of the detector input aligned to the stride-8 grid: such a cell at
column c, row r gives a face whose anchor centre is (8c, 8r) (insightface's anchors sit on the
cell corners), box = anchor -/+ BOX_HALF and keypoints = anchor + KPS_OFFSETS. Strides 16 and 32
never fire; the second anchor of each cell neither. `BrightestCellSCRFD` instead finds one face on
any photo: the brightest stride-32 cell (for rehearsals on real videos, where white cells are rare).

The recognizer maps a [N, 3, 112, 112] input to [N, 512] with a seeded conv + linear.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BOX_HALF = 32.0  # pixels of the detector input, = 4 units of stride 8
KPS_OFFSETS = np.array([[-12.0, -8.0], [12.0, -8.0], [0.0, 4.0], [-10.0, 16.0], [10.0, 16.0]])
STRIDES = (8, 16, 32)
DETECTOR_FILE = "scrfd_10g_bnkps.onnx"
RECOGNIZER_FILE = "glintr100.onnx"


class FakeSCRFD(nn.Module):
    """SCRFD-shaped detector whose faces are white 8 x 8 cells on the stride-8 grid."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("box", torch.full((4,), BOX_HALF / 8.0))
        self.register_buffer("kps", torch.tensor(KPS_OFFSETS.reshape(-1) / 8.0, dtype=torch.float32))

    def forward(self, x: torch.Tensor):  # x: [1, 3, H, W], (pixel - 127.5) / 128
        gray = x.mean(1, keepdim=True)  # [1, 1, H, W]
        scores, boxes, kpss = [], [], []
        for stride in STRIDES:
            pooled = F.avg_pool2d(gray, stride, stride)  # [1, 1, H/s, W/s]
            live = torch.sigmoid(50.0 * (pooled - 0.9)) if stride == 8 else pooled * 0.0
            per_anchor = torch.cat([live, live * 0.0], dim=1)  # [1, 2, h, w]: anchor 1 never fires
            score = per_anchor.permute(0, 2, 3, 1).reshape(-1, 1)  # [h * w * 2, 1], cell-major
            ones = torch.ones_like(score)
            scores.append(score)
            boxes.append(ones * self.box)  # [N, 4] distances in stride units
            kpss.append(ones * self.kps)  # [N, 10]
        return (*scores, *boxes, *kpss)


class BrightestCellSCRFD(FakeSCRFD):
    """SCRFD-shaped detector that finds one face per image: at the brightest stride-32 cell.

    Box = anchor -/+ 2 cells (128 px of the 640 px detector input); keypoints scaled likewise.
    """

    def __init__(self) -> None:
        super().__init__()
        self.box = torch.full((4,), 2.0)
        self.kps = torch.tensor(KPS_OFFSETS.reshape(-1) * 4.0 / 32.0, dtype=torch.float32)

    def forward(self, x: torch.Tensor):
        gray = x.mean(1, keepdim=True)
        scores, boxes, kpss = [], [], []
        for stride in STRIDES:
            pooled = F.avg_pool2d(gray, stride, stride)  # [1, 1, h, w]
            live = (pooled >= pooled.max()).float() * 0.99 if stride == 32 else pooled * 0.0
            per_anchor = torch.cat([live, live * 0.0], dim=1)
            score = per_anchor.permute(0, 2, 3, 1).reshape(-1, 1)
            ones = torch.ones_like(score)
            scores.append(score)
            boxes.append(ones * self.box)
            kpss.append(ones * self.kps)
        return (*scores, *boxes, *kpss)


class FakeRecognizer(nn.Module):
    """glintr100-shaped recognizer: [N, 3, 112, 112] -> [N, 512], seeded random conv + linear."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, kernel_size=8, stride=8)
        self.fc = nn.Linear(8 * 14 * 14, 512)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, 3, 112, 112] -> [N, 512]
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, output_names: list[str], dynamic: dict) -> None:
    """Export `model` to `path` with insightface's input name `input.1` (opset 17, TorchScript exporter)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model.eval(), (example,), buffer, dynamo=False, input_names=["input.1"],
                          output_names=output_names, dynamic_axes=dynamic, opset_version=17)
    path.write_bytes(buffer.getvalue())


def write_fake_antelopev2(root: Path, seed: int = 0, detector: nn.Module | None = None) -> tuple[Path, FakeRecognizer]:
    """Write `root/models/antelopev2/{scrfd_10g_bnkps,glintr100}.onnx`; returns the folder and the recognizer.

    `detector`: the SCRFD stand-in to export (None: FakeSCRFD, white cells).
    """
    folder = Path(root) / "models" / "antelopev2"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in STRIDES]
    export_onnx(detector if detector is not None else FakeSCRFD(), torch.zeros(1, 3, 640, 640),
                folder / DETECTOR_FILE, names, {"input.1": {2: "height", 3: "width"}})
    recognizer = FakeRecognizer(seed)
    export_onnx(recognizer, torch.zeros(1, 3, 112, 112), folder / RECOGNIZER_FILE, ["embedding"],
                {"input.1": {0: "batch"}, "embedding": {0: "batch"}})
    return folder, recognizer
