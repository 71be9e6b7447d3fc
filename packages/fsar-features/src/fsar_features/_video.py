"""Reading T frames of a video with PyAV: sample, decode only what is needed, resize and crop.

Decoding (``decode=``):

- ``seek``: for each target frame, seek to the keyframe at or before it and decode forward to the
  first frame whose presentation time reaches it. When the next target lies within the distance
  already seen between a keyframe and its target, the reader keeps decoding forward instead of
  seeking again (a seek would land on the same keyframe: long GOPs). A frame's index is read from its
  pts on the constant-rate grid ``(pts - start) · time_base · fps``; if any decoded frame is off the
  grid, or the seek fails, the reader falls back to ``sequential`` for the whole clip.
- ``sequential``: decode from the start and keep frame ``k`` when ``k`` is a target; only kept frames
  are converted to RGB. This is the definition of "frame k", and ``seek`` returns the same frames
  (``tests/features/test_video.py`` checks it for mp4, webm, mkv and avi).
- ``auto`` (default): ``seek``, with the fallback above.

Frame count: the stream's ``frames`` when the container reports one (mp4, avi), else the number of
demuxed video packets (webm and mkv do not store a count; demuxing reads the file but decodes
nothing). A stream that ends before a frame it reported is *truncated* and raises
``VideoReadError``; when the count was only a packet count, the reader re-samples over the frames
actually decoded instead.

Short videos: see ``fsar_features._sampling`` (indices repeat, evenly spread, in order).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch

from fsar_features._sampling import Generator, sample_indices
from fsar_features._spatial import resize_and_center_crop
from fsar_metric.errors import FsarError, InputError

__all__ = ["DecodeMode", "FrameToRGB", "VideoClip", "VideoReadError", "read_frames"]

log = logging.getLogger(__name__)

DecodeMode = Literal["auto", "seek", "sequential"]
#: Converts one decoded frame to uint8 RGB ``[H, W, 3]`` (``read_frames(to_rgb=...)``).
FrameToRGB = Callable[[av.VideoFrame], np.ndarray]
_DECODE_MODES = ("auto", "seek", "sequential")
_OUTPUTS = ("numpy", "torch")
#: Gap (in frames) below which the reader decodes forward instead of seeking, before it has seen the GOP.
_MIN_FORWARD_GAP = 8


class VideoReadError(FsarError, RuntimeError):
    """A video that cannot be read: missing, empty, not a video, undecodable, truncated, no frames.

    Attributes:
        path: the file.
        reason: one line saying what is wrong (what the extraction summary lists).
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class VideoClip:
    """T frames of one video and how they were chosen.

    Attributes:
        frames: uint8 ``[T, H, W, 3]`` RGB (numpy, or torch with ``output="torch"``).
        indices: source frame index of each of the T frames (repeats for videos shorter than T).
        n_source_frames: frames in the video (reported by the container, or counted).
        strategy: the sampling strategy (``uniform``, ``segments``, …).
        padded: True when the video has fewer than T frames and indices repeat (padding policy in
            ``fsar_features._sampling``).
        decode_mode: how the frames were decoded: ``seek`` or ``sequential``.
        size: the short side the frames were resized to, or None (original size).
    """

    frames: np.ndarray | torch.Tensor
    indices: tuple[int, ...]
    n_source_frames: int
    strategy: str
    padded: bool
    decode_mode: Literal["seek", "sequential"]
    size: int | None


class _NeedSequential(Exception):
    """Internal: the seek path cannot guarantee the sequential frames; decode sequentially instead."""


class _StreamEnded(Exception):
    """Internal: the stream ended after ``decoded`` frames, before the last target."""

    def __init__(self, decoded: int) -> None:
        super().__init__(decoded)
        self.decoded = decoded


def _count_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """Video packets in the file (demuxed, not decoded); 0 when the stream has none."""
    n = 0
    try:
        for packet in container.demux(stream):
            n += packet.size > 0
    except av.error.FFmpegError:
        if n:
            raise
        return 0  # some demuxers fail on the first read of an empty stream
    if n:
        container.seek(0)  # (AVI refuses to seek an empty stream)
    return n


def _rgb24(frame: av.VideoFrame) -> np.ndarray:
    """PyAV's (swscale's) RGB conversion, the default of ``read_frames``."""
    return frame.to_ndarray(format="rgb24")


def _decode_sequential(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    targets: list[int],
    to_rgb: FrameToRGB = _rgb24,
) -> dict[int, np.ndarray]:
    """Frames ``targets`` (sorted, unique) by decoding from the start."""
    wanted, out, k = set(targets), {}, -1
    last = targets[-1]
    for k, frame in enumerate(container.decode(stream)):
        if k in wanted:
            out[k] = to_rgb(frame)
        if k >= last:
            return out
    raise _StreamEnded(k + 1)


def _decode_seek(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    targets: list[int],
    to_rgb: FrameToRGB = _rgb24,
) -> dict[int, np.ndarray]:
    """Frames ``targets`` (sorted, unique) by seeking; raises ``_NeedSequential`` when unsure."""
    rate = stream.average_rate or stream.guessed_rate
    time_base = stream.time_base
    if not rate or not time_base:
        raise _NeedSequential("no frame rate or time base")
    start = stream.start_time or 0
    frames_per_tick = Fraction(time_base) * Fraction(rate)  # frames per pts unit

    def index_of(pts: int | None) -> int:
        if pts is None:
            raise _NeedSequential("a frame without pts")
        position = (pts - start) * frames_per_tick
        index = round(position)
        if abs(position - index) > Fraction(1, 100):
            raise _NeedSequential(f"pts {pts} is off the constant-rate grid")
        return index

    out: dict[int, np.ndarray] = {}
    decoder = None
    position = -1  # index of the last decoded frame, -1 before any
    forward_gap = _MIN_FORWARD_GAP
    for target in targets:
        if decoder is None or not 0 < target - position <= forward_gap:
            pts = start + round(Fraction(target) / frames_per_tick)
            try:
                container.seek(pts, stream=stream, backward=True, any_frame=False)
            except av.error.FFmpegError as error:
                raise _NeedSequential(f"seek failed: {error}") from error
            decoder, position, landed = container.decode(stream), None, None
        else:
            landed = position  # decoding on: no new keyframe
        for frame in decoder:
            index = index_of(frame.pts)
            if landed is None:
                landed = index
                # The keyframe was this far behind the target: later gaps up to it decode forward.
                forward_gap = max(forward_gap, target - index)
            elif position is not None and index != position + 1:
                raise _NeedSequential(f"frame index jumped from {position} to {index}")
            position = index
            if index == target:
                out[target] = to_rgb(frame)
                break
            if index > target:
                raise _NeedSequential(f"seek for frame {target} landed after it, on {index}")
        else:
            raise _StreamEnded(0 if position is None else position + 1)
        if landed > target:
            raise _NeedSequential(f"seek for frame {target} landed after it")
    return out


def read_frames(
    path: str | Path,
    n_frames: int = 8,
    strategy: str = "uniform",
    *,
    generator: Generator | None = None,
    size: int | None = None,
    crop: int | None = None,
    decode: DecodeMode = "auto",
    output: Literal["numpy", "torch"] = "numpy",
    to_rgb: FrameToRGB | None = None,
) -> VideoClip:
    """Read T sampled frames of a video file (mp4, webm, avi, mkv, anything FFmpeg demuxes).

    Args:
        path: the video file.
        n_frames: T.
        strategy: frame sampling strategy (``list_samplers()``): ``uniform`` (linspace) or
            ``segments`` (TSN; segment centres, or random offsets with ``generator``).
        generator: randomness for training-time ``segments`` sampling; None is deterministic.
        size: resize the short side of every frame to this many pixels (PIL bicubic, as the CLIP
            image processors do), then centre-crop; None keeps the original frames.
        crop: side of the square centre crop (default ``size``); only with ``size``.
        decode: ``auto``, ``seek`` or ``sequential`` (module docstring); all give the same frames.
        output: ``numpy`` or ``torch`` for ``frames``.
        to_rgb: converts each kept frame to uint8 RGB ``[H, W, 3]``; default PyAV's ``rgb24``
            (swscale). fsar-train's ``pixels`` source passes a NumPy conversion, whose values do not
            depend on buffer alignment.

    Returns:
        The frames, uint8 ``[T, H, W, 3]`` (``[T, crop, crop, 3]`` with ``size``), and their indices.

    Raises:
        VideoReadError: a missing, empty, unreadable, truncated or frameless video (``reason`` says which).
        ValueError: bad arguments (unknown strategy, decode mode or output; T < 1; crop without size).

    Example:
        >>> clip = read_frames(video_path, n_frames=8, size=32)  # doctest: +SKIP
        >>> clip.frames.shape, clip.indices  # doctest: +SKIP
        ((8, 32, 32, 3), (0, 9, 18, 27, 36, 45, 54, 63))
    """
    if decode not in _DECODE_MODES:
        raise InputError(f"unknown decode mode {decode!r}; valid: {', '.join(_DECODE_MODES)}")
    if output not in _OUTPUTS:
        raise InputError(f"unknown output {output!r}; valid: {', '.join(_OUTPUTS)}")
    if crop is not None and size is None:
        raise InputError(f"crop={crop} needs size= (the short side to resize to before cropping)")
    if to_rgb is not None and not callable(to_rgb):
        raise InputError(f"to_rgb must be a function of a decoded frame, got {type(to_rgb).__name__}")
    to_rgb = to_rgb or _rgb24
    sample_indices(1, n_frames, strategy)  # validates strategy and n_frames before touching the file

    path = Path(path)
    if not path.is_file():
        raise VideoReadError(path, "no such file")
    if path.stat().st_size == 0:
        raise VideoReadError(path, "empty file (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError) as error:
        raise VideoReadError(path, f"not a readable video ({type(error).__name__}: {error})") from error
    with container:
        if not container.streams.video:
            raise VideoReadError(path, "no video stream")
        stream = container.streams.video[0]
        try:
            reported = stream.frames
            n = reported if reported > 0 else _count_packets(container, stream)
            if n == 0:
                raise VideoReadError(path, "no frames (zero-frame video stream)")
            indices = sample_indices(n, n_frames, strategy, generator)
            targets = sorted(set(indices))
            mode: Literal["seek", "sequential"] = "sequential" if decode == "sequential" else "seek"
            try:
                if mode == "seek":
                    try:
                        frames = _decode_seek(container, stream, targets, to_rgb)
                    except _NeedSequential as why:
                        if decode == "seek":
                            log.debug("%s: seek decoding not exact (%s); decoding sequentially", path, why)
                        mode = "sequential"
                        container.seek(0)
                if mode == "sequential":
                    frames = _decode_sequential(container, stream, targets, to_rgb)
            except _StreamEnded as ended:
                if reported > 0 or ended.decoded == 0:
                    raise VideoReadError(
                        path,
                        f"truncated: the stream reports {n} frames but decoding stopped after {ended.decoded}"
                        if ended.decoded
                        else "no decodable frames",
                    ) from None
                # Only a packet count: sample again over the frames that really decode.
                log.debug("%s: %d packets but %d frames; sampling again", path, n, ended.decoded)
                container.seek(0)
                n = ended.decoded
                indices = sample_indices(n, n_frames, strategy, generator)
                targets, mode = sorted(set(indices)), "sequential"
                frames = _decode_sequential(container, stream, targets, to_rgb)
        except av.error.FFmpegError as error:
            raise VideoReadError(path, f"decoding failed ({type(error).__name__}: {error})") from error
        except _StreamEnded as ended:
            raise VideoReadError(path, f"decoding stopped after {ended.decoded} frames") from None

    array = np.stack([frames[i] for i in indices])  # [T, H, W, 3]
    if size is not None:
        array = resize_and_center_crop(array, size, crop)
    return VideoClip(
        frames=torch.from_numpy(array) if output == "torch" else array,
        indices=tuple(indices),
        n_source_frames=n,
        strategy=strategy,
        padded=n < n_frames,
        decode_mode=mode,
        size=size,
    )
