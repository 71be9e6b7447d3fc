"""Fixtures for fsar-features tests: synthetic videos written with PyAV, and a shared tiny backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

import fsar_features


def moving_square_frames(n_frames: int, height: int = 48, width: int = 64, *, seed: int = 0) -> np.ndarray:
    """uint8 ``[n, H, W, 3]``: a coloured square moving left to right over a frame-numbered background.

    The background level changes with the frame index, so every frame differs from its neighbours and
    a decoder returning the wrong frame is caught.
    """
    rng = np.random.default_rng(seed)
    colour = rng.integers(64, 256, size=3, dtype=np.uint8)
    side = max(4, height // 4)
    frames = np.zeros((n_frames, height, width, 3), np.uint8)
    for i in range(n_frames):
        frames[i] = (7 * i) % 200
        x = int((width - side) * i / max(1, n_frames - 1))
        frames[i, height // 3 : height // 3 + side, x : x + side] = colour
    return frames


def write_video(
    path: Path,
    frames: np.ndarray,
    *,
    codec: str = "libx264",
    fps: int = 25,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode ``frames`` ``[n, H, W, 3]`` into ``path`` with PyAV (one stream, flushed at the end)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if options:
            stream.options = options
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """``make_video(name, n_frames=40, *, seed=0, codec=..., fps=25, options=None, height=48, width=64)``."""

    def make(
        name: str = "clip.mp4",
        n_frames: int = 40,
        *,
        seed: int = 0,
        codec: str = "libx264",
        fps: int = 25,
        options: dict[str, str] | None = None,
        height: int = 48,
        width: int = 64,
    ) -> Path:
        frames = moving_square_frames(n_frames, height, width, seed=seed)
        return write_video(tmp_path / name, frames, codec=codec, fps=fps, options=options)

    return make


@pytest.fixture
def video_items(make_video: Callable[..., Path]) -> list[fsar_features.VideoItem]:
    """Six short mp4 clips of three classes; every third has no label."""
    labels = ["jumping jacks", "Pushing [something] from left to right", None]
    return [
        fsar_features.VideoItem(f"vid{k:02d}", make_video(f"videos/vid{k:02d}.mp4", 20 + 5 * k, seed=k), labels[k % 3])
        for k in range(6)
    ]


@pytest.fixture(scope="session")
def tiny_backend() -> fsar_features.FeatureBackend:
    """One tiny Video-LLaVA for the session (stateless between calls: eval mode, no cache kept)."""
    return fsar_features.create_backend("tiny-video-llava")


@pytest.fixture(scope="session")
def tiny_extractor(tiny_backend: fsar_features.FeatureBackend) -> fsar_features.FeatureExtractor:
    return fsar_features.FeatureExtractor(tiny_backend)


@pytest.fixture
def background_level() -> Callable[[int], int]:
    """The background grey level of source frame ``i`` in ``moving_square_frames``."""
    return lambda i: (7 * i) % 200
