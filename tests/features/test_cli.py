"""The command line on a folder of videos: exit status 0 / 1 / 2, labels from folders, info."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsar_features import FeatureCache
from fsar_features._cli import find_videos, main


@pytest.fixture
def video_folder(make_video, tmp_path: Path) -> Path:
    for k, label in enumerate(["jumping", "jumping", "running"]):
        make_video(f"videos/{label}/clip{k}.mp4", 20 + k, seed=k)
    return tmp_path / "videos"


def test_find_videos_takes_labels_from_class_folders(video_folder: Path) -> None:
    items = find_videos(video_folder, labels="folder")
    assert [(it.video_id, it.label) for it in items] == [
        ("jumping/clip0", "jumping"),
        ("jumping/clip1", "jumping"),
        ("running/clip2", "running"),
    ]
    assert all(it.label is None for it in find_videos(video_folder, labels="none"))


def test_extract_then_info_exit_zero_and_write_a_readable_cache(
    video_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["extract", str(video_folder), str(tmp_path / "cache"), "--no-progress", "--batch-size", "2"]) == 0
    cache = FeatureCache.open(tmp_path / "cache")
    assert cache.labels == {"jumping/clip0": "jumping", "jumping/clip1": "jumping", "running/clip2": "running"}
    assert cache.text(cache.video_ids, "support").shape == (3, 64)
    assert main(["info", str(tmp_path / "cache")]) == 0
    assert "videos=3" in capsys.readouterr().out


def test_a_broken_video_makes_the_exit_status_one(video_folder: Path, tmp_path: Path) -> None:
    (video_folder / "running" / "broken.mp4").write_bytes(b"")
    assert main(["extract", str(video_folder), str(tmp_path / "cache"), "--no-progress"]) == 1
    assert len(FeatureCache.open(tmp_path / "cache")) == 3


def test_usage_errors_exit_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", str(tmp_path / "missing"), str(tmp_path / "cache"), "--no-progress"]) == 2
    assert "is not a folder of videos" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["extract", str(tmp_path), str(tmp_path / "c"), "--backend", "clip"])
    assert info.value.code == 2


def test_decoding_options_reach_the_recipe(
    video_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = ["--visual-pooling", "grid2", "--temporal-centring", "--support-text-pooling", "label"]
    args = [
        "extract",
        str(video_folder),
        str(tmp_path / "c"),
        "--no-progress",
        *options,
        "--query-text-pooling",
        "mean",
    ]
    assert main(args) == 0
    recipe = FeatureCache.open(tmp_path / "c").recipe
    assert (recipe.visual_pooling, recipe.visual_dim, recipe.temporal_centring) == ("grid2", 4 * 64, True)
    assert (recipe.text_pooling_for("support"), recipe.text_pooling_for("query")) == ("label", "mean")
    assert main(["info", str(tmp_path / "c")]) == 0
    assert "visual_dim: 256" in capsys.readouterr().out


def test_paths_named_like_videos_that_are_not_files_are_named_not_skipped_silently(
    video_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = find_videos(video_folder)
    (video_folder / "x.mp4").mkdir()
    (video_folder / "gone.mp4").symlink_to(video_folder / "nowhere.mp4")
    with caplog.at_level("WARNING"):
        items = find_videos(video_folder)
    assert items == before  # neither becomes a video ...
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "skipping 2 path(s) named like videos that are not files" in message  # ... and both are said
    assert f"{video_folder / 'x.mp4'} (a folder)" in message
    assert f"{video_folder / 'gone.mp4'} (a broken link)" in message
