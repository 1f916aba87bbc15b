"""Decode any image a user may pass into the 8-bit picture an image viewer shows.

One rule for every input path, so the same picture gives the same pixels whether it arrives as a
file, a PIL image, a numpy array or a tensor:

- **8-bit** (uint8 arrays; PIL modes ``1``, ``L``, ``P``, ``RGB``, ``RGBA``, ``LA``, ``CMYK``,
  ``YCbCr``, ...): taken as they are (palettes and CMYK/YCbCr converted to RGB by PIL).
- **16-bit** (uint16 arrays; PIL ``I;16*`` modes, e.g. a 16-bit PNG): scaled by 255/65535
  (``round(v / 257)``), so 16-bit white is 8-bit white. Pillow's own ``convert("L")`` clips these
  values at 255 instead, which turns most of a 16-bit picture white.
- **other integers** (PIL mode ``I``, int32/int64 arrays): values within 0..255 are 8-bit, within
  0..65535 16-bit; anything else is refused.
- **floating point** (PIL mode ``F``, float arrays and tensors, as torchvision's ``ToTensor`` gives):
  values in [0, 1] are scaled by 255; anything else (negative, > 1, NaN: e.g. an already normalised
  batch) is refused, since no viewer convention maps it to pixels.
- **bool** arrays: False black, True white.
- **transparency** (an alpha channel or a palette's transparent index) is composited over white, as
  a web browser shows the image on a white page.
- **EXIF orientation** is applied (as viewers do for phone photos), and a multi-frame file (GIF,
  TIFF, APNG) gives its first frame.

Anything else (LAB or HSV images, arrays of other shapes) raises ValueError naming what was given.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["to_uint8_array", "read_image_file"]

BACKGROUND = 255  # transparent pixels are composited over white

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I;16S")
_DIRECT_MODES = ("L", "RGB", "RGBA", "LA")
_CONVERTED_MODES = {"1": "L", "P": None, "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "La": "LA", "RGBa": "RGBA",
                    "RGBX": "RGB"}


def read_image_file(path: str | os.PathLike) -> Any:
    """Open an image file with PIL and load its first frame; FileNotFoundError / ValueError when it
    is missing or not an image PIL can read."""
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give its image files (e.g. {path / '*.png'})")
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    try:
        image = Image.open(path)
        image.load()
    except Image.DecompressionBombError as e:  # (a ValueError subclass only in some Pillow versions)
        raise ValueError(f"{path} is too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL raises all three for broken files
        raise ValueError(f"{path} is not a readable image ({e})") from None
    return image


def _from_integers(arr: np.ndarray, what: str) -> np.ndarray:
    """uint8 from an integer array: 0..255 as it is, 0..65535 as 16-bit, else refused."""
    if arr.size == 0:
        raise ValueError(f"{what} is empty")
    lo, hi = int(arr.min()), int(arr.max())
    if lo >= 0 and hi <= 255:
        return arr.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return _from_uint16(arr)
    raise ValueError(f"{what} holds integers from {lo} to {hi}: images must be 8-bit (0-255) or 16-bit (0-65535)")


def _from_uint16(arr: np.ndarray) -> np.ndarray:
    return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # round(v * 255 / 65535)


OVERSHOOT = 0.25  # floats this far outside [0, 1] (bicubic resizing overshoots) are clipped, as a viewer does


def _from_floats(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.size == 0:
        raise ValueError(f"{what} is empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} holds NaN or infinite values: float images must hold values in [0, 1]")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -OVERSHOOT or hi > 1 + OVERSHOOT:
        raise ValueError(f"{what} holds floats from {lo:.6g} to {hi:.6g}: float images hold values in [0, 1] (slightly "
                         f"outside, within {OVERSHOOT}, is clipped). Values like these are usually an already normalised "
                         "batch, which goes to the model directly, not through preprocessing")
    return np.rint(np.clip(arr.astype(np.float64), 0.0, 1.0) * 255).astype(np.uint8)


def _array_to_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    """uint8 (H, W) or (H, W, C) from an array of any numeric dtype (see the module's rules)."""
    if arr.size == 0:
        raise ValueError(f"{what} of shape {arr.shape} is empty")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return _from_uint16(arr)
    if np.issubdtype(arr.dtype, np.integer):
        return _from_integers(arr, what)
    if np.issubdtype(arr.dtype, np.floating):
        return _from_floats(arr, what)
    raise ValueError(f"{what} has dtype {arr.dtype}; images are uint8, uint16, other integers, floats in [0, 1] or bool")


def _pil_to_uint8(image: Any) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3|4) array of a PIL image, following the module's rules."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    what = f"a PIL image of mode {mode!r}"
    if mode in _SIXTEEN_BIT_MODES:
        return _from_uint16(np.asarray(image).astype(np.uint16))
    if mode in ("I", "I;32", "I;32B", "I;32L"):
        return _from_integers(np.asarray(image), what)
    if mode == "F":
        return _from_floats(np.asarray(image), what)
    if mode in _CONVERTED_MODES:
        target = _CONVERTED_MODES[mode]
        if target is None:  # a palette: RGBA when it has a transparent entry
            target = "RGBA" if "transparency" in image.info else "RGB"
        image = image.convert(target)
        mode = image.mode
    elif mode == "L" and "transparency" in image.info:
        image, mode = image.convert("LA"), "LA"
    elif mode == "RGB" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode not in _DIRECT_MODES:
        raise ValueError(f"cannot decode {what}: convert it to RGB or L first (e.g. image.convert('RGB'))")
    return np.asarray(image)


def _composite(arr: np.ndarray) -> np.ndarray:
    """(H, W, 2|4) with alpha -> (H, W, 1|3) composited over `BACKGROUND`; others unchanged."""
    if arr.ndim != 3 or arr.shape[-1] not in (2, 4):
        return arr
    color, alpha = arr[..., :-1].astype(np.float64), arr[..., -1:].astype(np.float64) / 255.0
    return np.rint(color * alpha + BACKGROUND * (1.0 - alpha)).astype(np.uint8)


def to_uint8_array(item: Any) -> np.ndarray:
    """The picture of ``item`` as uint8 ``(H, W, C)`` with C = 1 (grey) or 3 (RGB), as a viewer shows it.

    ``item``: a path, a PIL image, a numpy array ``(H, W)`` / ``(H, W, C)`` with C in 1..4, or a tensor
    ``(C, H, W)`` / ``(H, W)`` (C in 1..4). Raises FileNotFoundError for a missing file, TypeError for
    another kind of object, ValueError for values or shapes that are not an image (see the module doc).
    """
    import torch
    from PIL import Image

    if isinstance(item, (str, os.PathLike)):
        item = read_image_file(item)
    if isinstance(item, torch.Tensor):
        if item.dim() not in (2, 3) or (item.dim() == 3 and item.shape[0] not in (1, 2, 3, 4)):
            raise ValueError(f"tensor images must be (C, H, W) with C in 1..4 or (H, W), got shape {tuple(item.shape)}")
        if item.layout != torch.strided or item.device.type == "meta":
            raise ValueError(f"a {item.layout} tensor on {item.device} is not an image; pass a dense tensor with data")
        t = item.detach().cpu()
        what = f"a {t.dtype} tensor"
        if t.dtype in (torch.bfloat16, torch.float16):  # numpy has no bfloat16
            t = t.float()
        item = (t.permute(1, 2, 0) if t.dim() == 3 else t).numpy()
    elif isinstance(item, np.ndarray):
        what = f"a {item.dtype} array"
    elif isinstance(item, Image.Image):
        arr = _pil_to_uint8(item)
        return _composite(arr if arr.ndim == 3 else arr[:, :, None])
    else:
        raise TypeError(f"cannot read an image from {type(item).__name__}; pass a path, PIL image, array or tensor")
    if item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[-1] not in (1, 2, 3, 4)):
        raise ValueError(f"{what} of shape {item.shape} is not an image: expected (H, W) or (H, W, C) with C in 1..4")
    arr = _array_to_uint8(item, what)
    return _composite(arr if arr.ndim == 3 else arr[:, :, None])
