"""Split files (both public formats), generic datasets and the missing-video report."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsar_train import (
    MissingVideosError,
    match_videos,
    read_class_names,
    read_csv_split,
    read_folder_split,
    read_split_file,
)


def test_class_slash_id_format_reads_kinetics_ucf_hmdb_and_ssv2_lines(write_file):
    path = write_file(
        "trainlist03.txt",
        "air drumming/-VtLx-mcPds_000012_000022\n"
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01\n"
        "\n"
        "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0\r\n"
        "Pouring something into something/51958\n",
    )
    entries = read_split_file(path)
    assert [(e.label, e.video_id) for e in entries] == [
        ("air drumming", "-VtLx-mcPds_000012_000022"),
        ("ApplyEyeMakeup", "v_ApplyEyeMakeup_g01_c01"),
        ("brush_hair", "April_09_brush_hair_u_nm_np1_ba_goo_0"),
        ("Pouring something into something", "51958"),
    ]
    assert {e.split for e in entries} == {"train"}  # from the file name
    assert all(e.class_index is None and e.path is None for e in entries)
    assert [e.line for e in entries] == [1, 2, 4, 5]


def test_prefix_format_reads_class_index_split_and_double_slash_path(write_file):
    path = write_file("some_list.txt", "train8/78687\ntest18/195025\ntest0//train_256/blasting_sand/x.mp4\n")
    entries = read_split_file(path)
    assert [(e.split, e.class_index, e.video_id, e.path) for e in entries] == [
        ("train", 8, "78687", None),
        ("test", 18, "195025", None),
        ("test", 0, "x", "train_256/blasting_sand/x.mp4"),
    ]
    assert all(e.label is None for e in entries)


def test_prefix_format_takes_names_from_an_index_list(write_file):
    names = read_class_names(write_file("test_classes.json", '["blasting sand", "busking"]'))
    entries = read_split_file(write_file("testlist07.txt", "test1/5\ntest0/6\n"), class_names=names)
    assert [e.label for e in entries] == ["busking", "blasting sand"]


def test_prefix_index_outside_the_name_list_is_an_error_with_the_line(write_file):
    path = write_file("testlist07.txt", "test0/1\ntest2/5\n")
    with pytest.raises(ValueError, match=r"testlist07.txt:2: class index 2 is outside the 2 class names"):
        read_split_file(path, class_names=["a", "b"])


def test_a_file_mixing_the_two_formats_is_rejected(write_file):
    path = write_file("list.txt", "train0/1\nsome class/2\n")
    with pytest.raises(ValueError, match=r"list.txt:2: 'some class/2' breaks the file's split\+class-index format"):
        read_split_file(path)


def test_a_line_without_a_slash_is_rejected(write_file):
    with pytest.raises(ValueError, match=r"list\.txt:1: expected 'class/video_id'"):
        read_split_file(write_file("list.txt", "no-slash-here\n"))


def _touch(root: Path, *relative: str) -> None:
    for rel in relative:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_missing_videos_are_counted_per_class_listed_and_dropped(write_file, tmp_path, caplog):
    root = tmp_path / "data"
    _touch(root, "jump/j1.mp4", "jump/j2.webm", "run/r1.mp4")
    entries = read_split_file(write_file("test.txt", "jump/j1\njump/j2\njump/j3\nrun/r1\nrun/r2\nswim/s1\n"))
    with caplog.at_level("WARNING"):
        split = match_videos(entries, root, split="test", missing_list=tmp_path / "missing_test.txt")
    assert split.class_names == ("jump", "run", "swim")
    assert split.video_ids == ["j1", "j2", "r1"]
    assert split.labels == [0, 0, 1]
    report = split.report
    assert (report.listed, report.found, report.n_missing) == (6, 3, 3)
    assert report.per_class == {"jump": (3, 1), "run": (2, 1), "swim": (1, 1)}
    assert "MISSING VIDEOS" in caplog.text
    assert "3 missing in 3 classes" in caplog.text
    assert "classes with no video left: swim" in caplog.text
    listed = (tmp_path / "missing_test.txt").read_text().splitlines()
    assert [line for line in listed if not line.startswith("#")] == ["jump/j3", "run/r2", "swim/s1"]


def test_strict_matching_fails_on_missing_videos(write_file, tmp_path):
    root = tmp_path / "data"
    _touch(root, "a/x.mp4")
    entries = read_split_file(write_file("val.txt", "a/x\na/y\n"))
    with pytest.raises(MissingVideosError, match="1 of 2 listed videos found") as info:
        match_videos(entries, root, split="val", strict=True)
    assert info.value.report.per_class == {"a": (2, 1)}


def test_kinetics_matching_compares_the_youtube_id_and_double_slash_paths_are_relative_to_root(write_file, tmp_path):
    root = tmp_path / "k100"
    _touch(root, "air_drumming/-VtLx-mcPds.mp4", "train_256/blasting_sand/x.mp4")
    kinetics = read_split_file(write_file("trainlist03.txt", "air drumming/-VtLx-mcPds_000012_000022\n"))
    assert match_videos(kinetics, root, key="youtube_id").report.n_missing == 0
    assert match_videos(kinetics, root, key="basename").report.n_missing == 1
    clip = read_split_file(write_file("test_few_shot.txt", "test0//train_256/blasting_sand/x.mp4\n"))
    split = match_videos(clip, root, class_names=["blasting sand"])
    assert split.videos[0].path == root / "train_256/blasting_sand/x.mp4"


def test_expected_count_difference_is_reported(write_file, tmp_path, caplog):
    root = tmp_path / "data"
    _touch(root, "a/x.mp4")
    entries = read_split_file(write_file("test.txt", "a/x\n"))
    with caplog.at_level("WARNING"):
        match_videos(entries, root, split="test", expected_videos=2400)
    assert "the published split has 2,400 videos" in caplog.text


def test_folder_per_class_and_csv_datasets(tmp_path, write_file):
    root = tmp_path / "mine"
    _touch(root, "wave/a.mp4", "wave/b.mp4", "clap/c.avi", "clap/notes.txt")
    entries = read_folder_split(root, split="train")
    assert [(e.label, e.video_id, e.path) for e in entries] == [
        ("clap", "c", "clap/c.avi"),
        ("wave", "a", "wave/a.mp4"),
        ("wave", "b", "wave/b.mp4"),
    ]
    assert match_videos(entries, root).report.n_missing == 0
    csv_path = write_file("mine.csv", "path,label,split\nwave/a.mp4,wave,train\nclap/c.avi,clap,test\n")
    rows = read_csv_split(csv_path, split="test")
    assert [(e.label, e.video_id, e.path, e.split) for e in rows] == [("clap", "c", "clap/c.avi", "test")]
    with pytest.raises(ValueError, match="the header needs 'label'"):
        read_csv_split(write_file("bad.csv", "video,class\n1,a\n"))
