"""The ``pixels`` feature source: frames decoded with PyAV, area-downsampled, flattened.

A model-free stand-in that lets synthetic-actions train and evaluate end to end before the MLLM
feature cache is connected. Per video: T frames at segment centres, read by fsar-features'
``read_frames`` with its ``segments`` sampler (deterministic; a video shorter than T repeats
frames) and a NumPy YUV → RGB conversion (``fsar_train._yuv``: swscale's output can vary with
buffer alignment), each frame area-resized to ``grid × grid`` RGB in [0, 1] and flattened to
D = 3·grid²; optionally the video's mean frame is subtracted, which cancels a static background and
static distractors and leaves the moving object; then each video is scaled to unit RMS (contrast
invariance). Features are cached as one fp16 tensor file per (video list, recipe).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor

from fsar_features import atomic_path, read_frames, sample_indices
from fsar_metric.errors import InputError
from fsar_train._config import ExperimentConfig
from fsar_train._features import TensorFeatures
from fsar_train._progress import make_progress
from fsar_train._sources import register_feature_source
from fsar_train._splits import DatasetSplit
from fsar_train._yuv import yuv420p_to_rgb

__all__ = ["decode_frames", "pixel_features", "segment_centres"]

logger = logging.getLogger(__name__)

#: fsar-features' frame sampler the pixels source reads with (segment centres without a generator).
SAMPLER = "segments"


def segment_centres(n_available: int, n_frames: int) -> list[int]:
    """T indices at the centres of T equal segments of ``n_available`` frames (TSN's test-time rule):
    fsar-features' ``segments`` sampler without a generator.

    Raises:
        ValueError: ``n_available < 1`` or ``n_frames < 1``.

    Example:
        >>> segment_centres(24, 8), segment_centres(3, 5)
        ([1, 4, 7, 10, 13, 16, 19, 22], [0, 0, 1, 2, 2])
    """
    return sample_indices(n_available, n_frames, SAMPLER)


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """uint8 ``[H, W, 3]``: yuv420p converted in NumPy (no swscale), any other format by PyAV."""
    if frame.format.name == "yuv420p":
        return yuv420p_to_rgb(frame.to_ndarray())
    return frame.to_ndarray(format="rgb24")


def decode_frames(path: str | Path, n_frames: int) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 frames at segment centres (``read_frames`` with the ``segments`` sampler).

    Raises:
        fsar_features.VideoReadError: a missing, unreadable, truncated or frameless video.
    """
    return read_frames(path, n_frames, SAMPLER, to_rgb=_to_rgb).frames


def pixel_features(paths: Sequence[Path], *, n_frames: int, grid: int, subtract_mean: bool, progress: bool) -> Tensor:
    """``[V, T, 3·grid²]`` float16 features of the videos at ``paths``."""
    out = torch.empty(len(paths), n_frames, 3 * grid * grid, dtype=torch.float16)
    with make_progress(progress) as bar:
        task = bar.add_task("pixel features", total=len(paths), info="")
        for v, path in enumerate(paths):
            frames = torch.from_numpy(decode_frames(path, n_frames)).permute(0, 3, 1, 2).float() / 255  # [T, 3, H, W]
            small = torch.nn.functional.adaptive_avg_pool2d(frames, grid)  # [T, 3, g, g]
            if subtract_mean:
                small = small - small.mean(0, keepdim=True)
            # Unit RMS per video: contrast invariance, and logits of a usable scale for learned metrics.
            small = small / small.square().mean().sqrt().clamp_min(1e-6)
            out[v] = small.flatten(1).half()  # [T, 3*g*g]
            bar.advance(task)
    return out


@register_feature_source("pixels")
def _pixels_source(split: DatasetSplit, config: ExperimentConfig) -> TensorFeatures:
    feats = config.features
    paths = [v.path for v in split.videos]
    if any(p is None for p in paths):
        raise InputError(f"split {split.name!r} has videos without a file; the pixels source decodes files")
    recipe = f"pixels/3 T={feats.n_frames} grid={feats.grid} subtract_mean={feats.subtract_mean}\n"
    digest = hashlib.sha256(recipe.encode())
    for video, path in zip(split.videos, paths, strict=True):
        digest.update(f"{video.video_id}\t{path}\n".encode())
    cache_dir = Path(feats.cache_dir or Path(config.data.root) / "features")
    cache = cache_dir / f"pixels-{split.name}-{digest.hexdigest()[:16]}.pt"
    if cache.exists():
        visual = torch.load(cache, weights_only=True)
        logger.info("pixel features of %s loaded from %s", split.name, cache)
    else:
        visual = pixel_features(
            [Path(p) for p in paths if p is not None],
            n_frames=feats.n_frames,
            grid=feats.grid,
            subtract_mean=feats.subtract_mean,
            progress=logger.isEnabledFor(logging.INFO),  # quiet runs draw no bar
        )
        with atomic_path(cache, suffix=".pt") as tmp:
            torch.save(visual, tmp)
        logger.info("pixel features of %s cached in %s", split.name, cache)
    return TensorFeatures(visual, split.labels, class_names=split.class_names, video_ids=split.video_ids)
