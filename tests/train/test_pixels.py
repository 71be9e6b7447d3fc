"""The ``pixels`` feature source reads frames through fsar-features (``read_frames``, ``segments``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
import pytest

from fsar_features import VideoReadError, read_frames, sample_indices
from fsar_train import decode_frames, pixel_features, segment_centres
from fsar_train._yuv import rgb_to_yuv420p, yuv420p_to_rgb


def _clip(n: int, height: int, width: int) -> np.ndarray:
    """uint8 ``[n, H, W, 3]``: a gradient that changes every frame and a square moving right."""
    y, x = np.mgrid[0:height, 0:width]
    frames = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        frames[i] = np.stack([(x * 3 + y * 2 + 11 * i) % 256, (x * 7 + i) % 256, (y * 5 + 3 * i) % 256], -1)
        side, x0 = height // 4, (i * 5) % (width - height // 4)
        frames[i, height // 3 : height // 3 + side, x0 : x0 + side] = (250, 40, 90)
    return frames


def _write(path: Path, frames: np.ndarray, codec: str) -> Path:
    """Encode with one thread from NumPy yuv420p planes (no swscale): the same bytes every run."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.thread_count = 1
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(image), format="yuv420p")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.fixture
def videos(tmp_path: Path) -> list[Path]:
    """1, 3, 12 and 30 frames; mkv (no frame count in the container) and mp4 (a count)."""
    specs = [
        (1, 32, 32, "ffv1", "mkv"),
        (3, 32, 48, "mpeg4", "mp4"),
        (12, 48, 64, "ffv1", "mkv"),
        (30, 32, 32, "mpeg4", "mp4"),
    ]
    return [_write(tmp_path / f"v{k}.{ext}", _clip(n, h, w), codec) for k, (n, h, w, codec, ext) in enumerate(specs)]


# sha256 (16 hex digits) of the features of ``videos``, one video per call, computed by the pixels
# source before it read frames through fsar-features (its own PyAV loop and segment sampler).
REGRESSION = [
    (8, 8, True, "c10fd9eb65e0791e"),
    (5, 4, False, "09593b22772ececd"),
    (4, 16, True, "eefc3434d5ce103b"),
]


@pytest.mark.parametrize(("n_frames", "grid", "subtract_mean", "expected"), REGRESSION)
def test_pixel_features_are_those_of_the_own_decoder(
    videos: list[Path], n_frames: int, grid: int, subtract_mean: bool, expected: str
) -> None:
    digest = hashlib.sha256()
    for path in videos:
        features = pixel_features([path], n_frames=n_frames, grid=grid, subtract_mean=subtract_mean, progress=False)
        assert features.shape == (1, n_frames, 3 * grid * grid)
        digest.update(features.numpy().tobytes())
    assert digest.hexdigest()[:16] == expected


def test_frames_are_read_frames_segment_centres_converted_without_swscale(videos: list[Path]) -> None:
    for path in videos:
        clip = read_frames(path, 8, "segments")
        frames = decode_frames(path, 8)
        assert list(clip.indices) == segment_centres(clip.n_source_frames, 8)
        with av.open(str(path)) as container:
            decoded = [yuv420p_to_rgb(f.to_ndarray()) for f in container.decode(video=0)]
        np.testing.assert_array_equal(frames, np.stack([decoded[i] for i in clip.indices]))
        # swscale's conversion (read_frames' default) rounds differently: the pixels source does not use it
        assert np.abs(frames.astype(int) - clip.frames.astype(int)).max() <= 3


def test_segment_centres_is_the_segments_sampler() -> None:
    assert segment_centres(24, 8) == sample_indices(24, 8, "segments") == [1, 4, 7, 10, 13, 16, 19, 22]
    assert segment_centres(3, 5) == [0, 0, 1, 2, 2]  # shorter than T: frames repeat, in order
    with pytest.raises(ValueError, match="cannot sample frames from a video with 0 frames"):
        segment_centres(0, 8)


def test_unreadable_videos_are_named(tmp_path: Path) -> None:
    with pytest.raises(VideoReadError, match="no such file"):
        decode_frames(tmp_path / "missing.mp4", 8)
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(VideoReadError, match=r"text\.mp4: not a readable video"):
        pixel_features([tmp_path / "text.mp4"], n_frames=8, grid=4, subtract_mean=True, progress=False)
    with pytest.raises(ValueError, match="to_rgb must be a function of a decoded frame, got str"):
        read_frames(tmp_path / "text.mp4", 8, to_rgb="rgb24")  # type: ignore[arg-type]
