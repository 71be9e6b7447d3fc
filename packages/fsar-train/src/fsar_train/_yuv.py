"""RGB ↔ YUV 4:2:0 (BT.601, limited range) in NumPy, so pixel values never pass through swscale.

swscale picks SIMD code paths by the alignment of the buffers it is given, and those paths round
differently at the edges: the same frame converted twice in one process can differ by a few levels
(observed on 32-pixel-wide frames). Converting here, with element-wise arithmetic in a fixed order
(no BLAS), keeps the synthetic videos and the decoded pixel features identical from run to run.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rgb_to_yuv420p", "yuv420p_to_rgb"]

_TO_YUV = np.array([[0.256788, 0.504129, 0.097906], [-0.148223, -0.290993, 0.439216], [0.439216, -0.367788, -0.071427]])
_OFFSET = np.array([16.0, 128.0, 128.0])
_TO_RGB = np.linalg.inv(_TO_YUV)


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB (H, W even) → ``[H·3/2, W]`` uint8 planar Y, U, V (PyAV's yuv420p layout)."""
    height, width = rgb.shape[:2]
    yuv = _mix(rgb.astype(np.float64), _TO_YUV) + _OFFSET  # [H, W, 3]
    y = yuv[..., 0]
    # The 2×2 average written out, a fixed summation order: [H/2, W/2, 2].
    chroma = (yuv[0::2, 0::2, 1:] + yuv[1::2, 0::2, 1:] + yuv[0::2, 1::2, 1:] + yuv[1::2, 1::2, 1:]) / 4
    out = np.empty((height * 3 // 2, width), dtype=np.uint8)
    out[:height] = np.clip(np.rint(y), 0, 255)
    quarter = height // 4
    out[height : height + quarter] = np.clip(np.rint(chroma[..., 0]), 0, 255).reshape(quarter, width)
    out[height + quarter :] = np.clip(np.rint(chroma[..., 1]), 0, 255).reshape(quarter, width)
    return out


def yuv420p_to_rgb(planes: np.ndarray) -> np.ndarray:
    """``[H·3/2, W]`` uint8 yuv420p (as PyAV's ``to_ndarray()`` returns it) → ``[H, W, 3]`` uint8 RGB
    (chroma upsampled by repetition)."""
    height, width = planes.shape[0] * 2 // 3, planes.shape[1]
    quarter = height // 4
    u = planes[height : height + quarter].reshape(height // 2, width // 2)
    v = planes[height + quarter :].reshape(height // 2, width // 2)
    chroma = np.stack([u, v], axis=-1).repeat(2, axis=0).repeat(2, axis=1)  # [H, W, 2]
    yuv = np.concatenate([planes[:height, :, None], chroma], axis=-1).astype(np.float64) - _OFFSET
    return np.clip(np.rint(_mix(yuv, _TO_RGB)), 0, 255).astype(np.uint8)


def _mix(pixels: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``pixels [..., 3] @ matrix.T`` as element-wise products and sums in a fixed order: a BLAS matmul
    may round differently with threads or alignment, and one level of rounding changes the video."""
    channels = [pixels[..., 0], pixels[..., 1], pixels[..., 2]]
    return np.stack([row[0] * channels[0] + row[1] * channels[1] + row[2] * channels[2] for row in matrix], axis=-1)
