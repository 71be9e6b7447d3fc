"""Reading frames with PyAV: seek and sequential decoding agree, formats, short and broken videos."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from fsar_features import VideoReadError, read_frames

# (file name, codec, encoder options): mp4/H.264 with B-frames and a short or the default GOP, VP9 and
# VP8 in WebM (no frame count in the container), H.264 in Matroska, MPEG-4 part 2 in AVI.
FORMATS = [
    ("gop16.mp4", "libx264", {"g": "16"}),
    ("default.mp4", "libx264", None),
    ("vp9.webm", "libvpx-vp9", None),
    ("vp8.webm", "libvpx", None),
    ("h264.mkv", "libx264", None),
    ("mpeg4.avi", "mpeg4", {"b": "2000000"}),
]


def _content_index(frame: np.ndarray, level: Callable[[int], int], n_source: int) -> int:
    """Which source frame this decoded frame shows, from its background grey level (top-left corner)."""
    grey = float(frame[:4, :4].mean())
    return min(range(n_source), key=lambda i: abs(level(i) - grey))


@pytest.mark.parametrize(("name", "codec", "options"), FORMATS)
@pytest.mark.parametrize("strategy", ["uniform", "segments"])
def test_seek_and_sequential_decoding_give_identical_frames(
    make_video: Callable[..., Path], name: str, codec: str, options: dict | None, strategy: str
) -> None:
    path = make_video(name, 75, codec=codec, options=options)
    seek = read_frames(path, 8, strategy, decode="seek")
    sequential = read_frames(path, 8, strategy, decode="sequential")
    assert seek.decode_mode == "seek", "the seek path fell back on a plain constant-rate file"
    assert sequential.decode_mode == "sequential"
    assert seek.indices == sequential.indices
    assert seek.n_source_frames == sequential.n_source_frames == 75
    np.testing.assert_array_equal(seek.frames, sequential.frames)


@pytest.mark.parametrize(("name", "codec", "options"), FORMATS)
def test_decoded_frames_show_the_sampled_source_frames(
    make_video: Callable[..., Path], background_level: Callable[[int], int], name: str, codec: str, options: dict | None
) -> None:
    path = make_video(name, 28, codec=codec, options=options)
    clip = read_frames(path, 8, "uniform")
    assert clip.frames.shape == (8, 48, 64, 3)
    assert clip.frames.dtype == np.uint8
    assert [_content_index(f, background_level, 28) for f in clip.frames] == list(clip.indices)


def test_streams_without_a_frame_count_are_counted(make_video: Callable[..., Path]) -> None:
    import av

    path = make_video("nocount.webm", 33, codec="libvpx-vp9")
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # WebM stores no frame count
    assert read_frames(path, 8).n_source_frames == 33


def test_videos_shorter_than_t_repeat_frames_in_order(make_video: Callable[..., Path]) -> None:
    clip = read_frames(make_video("short.mp4", 3), 8, "uniform")
    assert clip.padded
    assert clip.n_source_frames == 3
    assert clip.indices == (0, 0, 1, 1, 1, 1, 2, 2)
    assert np.array_equal(clip.frames[0], clip.frames[1])


def test_resize_and_crop_are_applied_when_size_is_given(make_video: Callable[..., Path]) -> None:
    clip = read_frames(make_video("c.mp4", 16, height=60, width=100), 4, size=32, crop=24, output="torch")
    assert isinstance(clip.frames, torch.Tensor)
    assert tuple(clip.frames.shape) == (4, 24, 24, 3)
    assert clip.frames.dtype == torch.uint8
    assert clip.size == 32


def test_segments_with_a_generator_are_reproducible(make_video: Callable[..., Path]) -> None:
    path = make_video("g.mp4", 60)
    a = read_frames(path, 8, "segments", generator=np.random.default_rng(5))
    b = read_frames(path, 8, "segments", generator=np.random.default_rng(5))
    assert a.indices == b.indices
    assert np.array_equal(a.frames, b.frames)


def test_zero_byte_file_raises_a_read_error_naming_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty file") as info:
        read_frames(path)
    assert info.value.path == str(path)


def test_missing_and_non_video_files_raise_read_errors(tmp_path: Path) -> None:
    with pytest.raises(VideoReadError, match="no such file"):
        read_frames(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoReadError, match="not a readable video"):
        read_frames(junk)


def test_truncated_mp4_raises_a_read_error(make_video: Callable[..., Path]) -> None:
    path = make_video("cut.mp4", 60)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the moov index at the end is gone
    with pytest.raises(VideoReadError):
        read_frames(path)


def test_truncated_mkv_reports_fewer_frames_than_promised(make_video: Callable[..., Path]) -> None:
    path = make_video("cut.avi", 120, codec="mpeg4")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the AVI header still says 120 frames
    with pytest.raises(VideoReadError, match=r"truncated|decod"):
        read_frames(path, 8, "uniform", decode="sequential")


def test_zero_frame_video_raises_a_read_error(tmp_path: Path) -> None:
    import av

    path = tmp_path / "noframes.avi"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()  # write the header although no frame follows
    assert path.stat().st_size > 0
    with pytest.raises(VideoReadError, match="no frames"):
        read_frames(path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decode": "fast"}, "unknown decode mode 'fast'; valid: auto, seek, sequential"),
        ({"output": "pil"}, "unknown output 'pil'"),
        ({"crop": 24}, "crop=24 needs size="),
        ({"strategy": "random"}, "unknown frame sampler 'random'"),
        ({"n_frames": 0}, "n_frames must be at least 1"),
    ],
)
def test_bad_arguments_are_refused_before_reading(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        read_frames(tmp_path / "never-opened.mp4", **kwargs)
