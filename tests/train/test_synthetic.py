"""synthetic-actions: grammar and split, determinism, decodable mp4 files, idempotent generation."""

from __future__ import annotations

import csv
import json

import av
import numpy as np
import pytest

from fsar_train import SyntheticConfig, generate_synthetic_actions, read_split_file, synthetic_classes, synthetic_videos
from fsar_train._synthetic import DIRECTIONS, MANNERS, _trajectory, render_video
from fsar_train._yuv import yuv420p_to_rgb


def test_at_least_40_classes_named_in_ssv2_style_and_split_three_ways():
    classes = synthetic_classes()
    names = [c.name for c in classes]
    assert len(classes) >= 40
    assert len(set(names)) == len(names)
    for example in (
        "moving something from left to right",
        "rotating something clockwise",
        "something falling down",
        "pushing something from left to right until it stops",
    ):
        assert example in names
    splits = {s: [c for c in classes if c.split == s] for s in ("train", "val", "test")}
    assert all(len(v) >= 5 for v in splits.values())  # 5-way episodes in every split


def test_every_test_word_is_seen_in_training_but_no_test_combination_is():
    classes = synthetic_classes()
    train_words = {w for c in classes if c.split == "train" for w in c.name.split()}
    train_pairs = {(c.manner, c.direction) for c in classes if c.split == "train"}
    for split in ("val", "test"):
        for c in (c for c in classes if c.split == split):
            assert set(c.name.split()) <= train_words, c.name
            assert (c.manner, c.direction) not in train_pairs, c.name
            assert c.manner in {m for m, _ in train_pairs}
            assert c.direction in {d for _, d in train_pairs}
    assert len(MANNERS) * len(DIRECTIONS) == sum(1 for c in classes if c.manner)


def test_every_class_is_a_distinct_motion_program():
    config = SyntheticConfig(videos_per_class=1, n_frames=16)
    classes = synthetic_classes()
    _, spec = synthetic_videos(config)[0]  # one appearance and start, run through every program
    trajectories = [_trajectory(c, spec, config.n_frames) for c in classes]
    for i in range(len(classes)):
        for j in range(i + 1, len(classes)):
            assert not np.allclose(trajectories[i], trajectories[j]), (classes[i].name, classes[j].name)


def test_appearance_is_randomised_within_a_class():
    items = [spec for cls, spec in synthetic_videos(SyntheticConfig(videos_per_class=30)) if cls.index == 0]
    assert len({s.shape for s in items}) >= 4
    assert len({s.colour for s in items}) >= 5
    assert len({s.background for s in items}) >= 4
    assert len({len(s.distractors) for s in items}) >= 3
    assert len({round(s.x0) for s in items}) >= 10
    assert len({round(s.duration, 2) for s in items}) >= 10


def _decode(path) -> np.ndarray:
    """``[F, H, W, 3]`` RGB through fsar-train's NumPy conversion (swscale's can vary by buffer alignment)."""
    with av.open(str(path)) as container:
        return np.stack([yuv420p_to_rgb(f.to_ndarray()) for f in container.decode(video=0)])


def test_generation_is_deterministic_by_seed_and_videos_decode(tmp_path, tiny_synthetic):
    a = generate_synthetic_actions(tmp_path / "a", tiny_synthetic, progress=False).parent
    b = generate_synthetic_actions(tmp_path / "b", tiny_synthetic, progress=False).parent
    files = sorted(p.relative_to(a) for p in a.rglob("*.mp4"))
    assert len(files) == 44
    # The rendered frames are identical. libx264's bytes are too on a quiet machine, but under CPU
    # load it has written other, equally faithful streams (docs/train.md §3), so the encoded videos
    # are compared by their decoded frames: identical where the bytes are, close where not.
    for cls, spec in synthetic_videos(tiny_synthetic):
        assert np.array_equal(render_video(cls, spec, tiny_synthetic), render_video(cls, spec, tiny_synthetic))
    for rel in files:
        frames, again = _decode(a / rel), _decode(b / rel)
        assert frames.shape == (4, 32, 32, 3)
        if (a / rel).read_bytes() == (b / rel).read_bytes():
            assert np.array_equal(frames, again)
        else:
            assert np.abs(frames.astype(float) - again.astype(float)).mean() < 4
    assert (a / "manifest.csv").read_text() == (b / "manifest.csv").read_text()
    other = generate_synthetic_actions(
        tmp_path / "c", SyntheticConfig(videos_per_class=1, n_frames=4, size=32, workers=1, seed=1), progress=False
    ).parent
    assert not np.array_equal(_decode(a / files[0]), _decode(other / files[0]))


def test_decoded_frames_match_the_rendered_ones_up_to_compression(tmp_path, tiny_synthetic):
    root = generate_synthetic_actions(tmp_path, tiny_synthetic, progress=False).parent
    cls, spec = synthetic_videos(tiny_synthetic)[0]
    rendered = render_video(cls, spec, tiny_synthetic).astype(float)
    decoded = _decode(root / "videos" / cls.slug / f"{spec.video_id}.mp4").astype(float)
    assert np.abs(decoded - rendered).mean() < 8  # crf 18 at 32 × 32, 4:2:0 chroma


def test_manifest_has_a_caption_per_video_and_splits_use_the_public_line_format(tmp_path, tiny_synthetic):
    root = generate_synthetic_actions(tmp_path, tiny_synthetic, progress=False).parent
    with (root / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 44
    for row in rows:
        assert row["colour"] in row["caption"]
        assert row["shape"] in row["caption"]
        assert (root / row["path"]).is_file()
    test = read_split_file(root / "splits" / "test.txt")
    assert {e.split for e in test} == {"test"}
    info = json.loads((root / "dataset.json").read_text())
    assert sorted(e.label for e in test) == sorted(info["classes"]["test"])
    assert info["complete"]
    assert info["videos"] == 44


def test_rerun_skips_complete_output_and_other_parameters_are_refused(tmp_path, tiny_synthetic):
    root = generate_synthetic_actions(tmp_path, tiny_synthetic, progress=False).parent
    video = next(root.rglob("*.mp4"))
    stamp = video.stat().st_mtime_ns
    generate_synthetic_actions(tmp_path, tiny_synthetic, progress=False)
    assert video.stat().st_mtime_ns == stamp
    video.unlink()  # an interrupted run: only the missing file is written again
    (root / "dataset.json").unlink()
    generate_synthetic_actions(tmp_path, tiny_synthetic, progress=False)
    assert video.is_file()
    with pytest.raises(ValueError, match="generated with"):
        generate_synthetic_actions(tmp_path, SyntheticConfig(videos_per_class=2, n_frames=4, size=32), progress=False)
    assert not list(root.rglob(".*.tmp*"))
    assert not list(root.rglob(".*mp4"))
