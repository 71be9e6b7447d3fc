"""Spatial preprocessing shared by every frame of a clip: resize the short side, centre-crop.

The arithmetic copies transformers' CLIP-style image processors (``VideoLlavaImageProcessor``):
the short side becomes ``size`` and the long side ``int(size · long / short)``, resampled with PIL's
bicubic filter; the crop starts at ``((h - crop) // 2, (w - crop) // 2)``. Doing it here, once per
frame with the same geometry for the whole clip, makes the processor's own resize and crop no-ops,
so the backend only rescales and normalises. ``tests/features/test_spatial.py`` checks the result
against ``VideoLlavaImageProcessor``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from fsar_metric.errors import InputError

__all__ = ["resize_and_center_crop", "resized_shape"]


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """``(height, width)`` after resizing the short side to ``size`` (transformers' rounding).

    Example:
        >>> resized_shape(240, 320, 224)
        (224, 298)
    """
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def resize_and_center_crop(frames: np.ndarray, size: int, crop: int | None = None) -> np.ndarray:
    """Resize the short side of every frame to ``size``, then centre-crop a ``crop`` square.

    Args:
        frames: uint8 ``[T, H, W, 3]``.
        size: target short side in pixels.
        crop: side of the square crop (default ``size``); at most ``size``.

    Returns:
        uint8 ``[T, crop, crop, 3]``; the same geometry for every frame.

    Raises:
        ValueError: frames not uint8 ``[T, H, W, 3]``, or a crop larger than ``size``.

    Example:
        >>> resize_and_center_crop(np.zeros((2, 120, 160, 3), np.uint8), 32).shape
        (2, 32, 32, 3)
    """
    crop = size if crop is None else crop
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    if not 0 < crop <= size:
        raise InputError(f"crop must be in [1, size={size}], got {crop}")
    _, height, width, _ = frames.shape
    new_h, new_w = resized_shape(height, width, size)
    if (new_h, new_w) != (height, width):
        # PIL takes (width, height); BICUBIC is the CLIP processors' default resample.
        frames = np.stack(
            [np.asarray(Image.fromarray(f).resize((new_w, new_h), resample=Image.Resampling.BICUBIC)) for f in frames]
        )
    top, left = (new_h - crop) // 2, (new_w - crop) // 2
    return np.ascontiguousarray(frames[:, top : top + crop, left : left + crop])
