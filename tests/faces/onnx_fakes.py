"""The antelopev2 ONNX stand-ins (instruments.onnx_stand_ins) and a marker image for them."""

from __future__ import annotations

import numpy as np

from instruments.onnx_stand_ins import (  # noqa: F401  (re-exported for the tests)
    BOX_HALF,
    KPS_OFFSETS,
    STRIDES,
    BrightestCellSCRFD,
    FakeRecognizer,
    FakeSCRFD,
    write_fake_antelopev2,
)


def marker_image(width: int, height: int, corners: list[tuple[int, int]], cell: int = 8) -> np.ndarray:
    """Black RGB image with a white `cell` x `cell` square whose top-left corner is at each (x, y)."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for x, y in corners:
        image[y:y + cell, x:x + cell] = 255
    return image
