"""Read a photo file as RGB uint8, converting every Pillow mode properly.

Handled: EXIF orientation; alpha (RGBA, LA, P with transparency) composited over white, the colour
of the reference canvas; grayscale (L, 1) replicated to 3 channels; 16-bit and 32-bit integer
modes (I;16*, I) rescaled from their full range (a plain `convert("RGB")` clips them at 255);
float mode F rescaled from [0, 1] when its values lie there, else clipped to [0, 255]; CMYK, YCbCr,
LAB and HSV through Pillow's conversion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ingredients.faces.errors import ImageReadError

_ALPHA_MODES = {"RGBA", "LA", "RGBa", "La", "PA"}


def _to_uint8(values: np.ndarray, full_scale: float) -> np.ndarray:
    """Rescale [0, full_scale] values to uint8 with rounding."""
    scaled = np.clip(values.astype(np.float64) * (255.0 / full_scale), 0.0, 255.0)
    return np.round(scaled).astype(np.uint8)


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """A Pillow image of any mode as RGB uint8 [H, W, 3]."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.int64)
        # "I" holds 16-bit PNGs in older Pillow versions; 8-bit data can also arrive as "I".
        full = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = _to_uint8(values, full)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "F":
        values = np.asarray(image).astype(np.float64)
        full = 1.0 if values.size and values.min() >= 0.0 and values.max() <= 1.0 else 255.0
        gray = _to_uint8(values, full)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


def load_rgb(path: str | Path) -> np.ndarray:
    """Read `path` as a contiguous RGB uint8 array [H, W, 3]; ImageReadError names the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "no such file")
    try:
        with Image.open(path) as image:
            image.load()
            rgb = pil_to_rgb(image)
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format (expected JPEG, PNG, WebP, ...)") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated/corrupt data
        raise ImageReadError(path, f"corrupt or truncated image data ({exc})") from exc
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) == 0:
        raise ImageReadError(path, f"decoded to an unusable array of shape {rgb.shape}")
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def check_rgb_array(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Validate an in-memory RGB uint8 [H, W, 3] array; returns it C-contiguous (dlib needs that)."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what} must be RGB [H, W, 3], got shape {image.shape}; convert with load_rgb or pil_to_rgb")
    if image.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got {image.dtype}; scale to 0..255 and cast with .astype(np.uint8)")
    if min(image.shape[:2]) == 0:
        raise ValueError(f"{what} is empty: shape {image.shape}")
    return np.ascontiguousarray(image)
