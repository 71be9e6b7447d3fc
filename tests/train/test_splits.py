"""Split files (both public formats), generic datasets and the missing-video report."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsar_train import (
    MissingVideosError,
    SplitEntry,
    SplitFilesNotFoundError,
    find_split_files,
    match_videos,
    normalize_class_name,
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
    # The lines carry the split and an index; the names come from the list (an index is never a name).
    path = write_file("some_list.txt", "train1/78687\ntest0/195025\ntest0//train_256/blasting_sand/x.mp4\n")
    entries = read_split_file(path, class_names=["blasting sand", "busking"])
    assert [(e.split, e.class_index, e.video_id, e.path, e.label) for e in entries] == [
        ("train", 1, "78687", None, "busking"),
        ("test", 0, "195025", None, "blasting sand"),
        ("test", 0, "x", "train_256/blasting_sand/x.mp4", "blasting sand"),
    ]


def test_double_slash_lines_without_names_take_the_folder_holding_the_file_as_label(write_file):
    path = write_file(
        "test_few_shot.txt",
        "test0//train_256/blasting_sand/a.mp4\ntest1//videos/BlowingCandles/v_BlowingCandles_g01_c01.avi\n",
    )
    entries = read_split_file(path)
    assert [(e.label, e.class_index, e.video_id) for e in entries] == [
        ("blasting_sand", 0, "a"),
        ("BlowingCandles", 1, "v_BlowingCandles_g01_c01"),
    ]


def test_index_only_lines_without_names_raise_saying_the_file_has_no_names_and_how_to_supply_them(write_file):
    path = write_file("vallist07.txt", "val2/188509\nval9/154368\n")
    with pytest.raises(ValueError, match=r"vallist07\.txt:1: 'val2/188509' carries only a class index") as info:
        read_split_file(path)
    message = str(info.value)
    assert "the file carries no class names" in message
    for hint in ("data.val_names", "--benchmark", "ssv2-small"):
        assert hint in message


def test_a_name_list_disagreeing_with_the_class_folder_raises_naming_file_line_and_both_names(write_file):
    path = write_file("test_few_shot.txt", "test0//videos/fencing/a.avi\ntest1//videos/kick/b.avi\n")
    with pytest.raises(ValueError, match=r"test_few_shot\.txt:2: test1 is 'pour' in .*class folder is 'kick'"):
        read_split_file(path, class_names=["fencing", "pour"])


def test_class_folders_and_names_agree_after_normalising_case_underscores_brackets_and_camel_case(write_file):
    path = write_file(
        "test_few_shot.txt",
        "test0//train_256/blasting_sand/a.mp4\ntest1//videos/CuttingInKitchen/b.avi\ntest2//v/brush_hair/c.avi\n",
    )
    names = ["Blasting Sand", "Cutting in Kitchen", "brush hair"]
    assert [e.label for e in read_split_file(path, class_names=names)] == names
    assert normalize_class_name("Pouring [something] into [something]") == "pouring something into something"


def test_one_index_in_two_class_folders_is_rejected_without_a_name_list(write_file):
    path = write_file("train_few_shot.txt", "train0//videos/clap/a.avi\ntrain0//videos/wave/b.avi\n")
    with pytest.raises(ValueError, match=r"train_few_shot\.txt:2: train0 lies in folder 'wave', but line 1"):
        read_split_file(path)


def test_class_id_lines_read_with_a_name_list_take_its_index_and_spelling(write_file):
    path = write_file("trainlist03.txt", "Pouring something into something/51958\nClosing something/7\n")
    names = ["Closing [something]", "Pouring [something] into [something]"]
    entries = read_split_file(path, class_names=names)
    assert [(e.label, e.class_index) for e in entries] == [(names[1], 1), (names[0], 0)]
    with pytest.raises(ValueError, match=r"trainlist03\.txt:2: class 'Closing something' is not among the 1 names"):
        read_split_file(path, class_names=names[1:])


def test_matching_entries_with_only_an_index_and_no_class_list_is_an_error(tmp_path):
    entries = [SplitEntry("195025", None, 18, "test", None, 3)]
    with pytest.raises(ValueError, match=r"carry only a class index \(first: line 3, test18/195025\)"):
        match_videos(entries, tmp_path, split="test")


def test_prefix_format_takes_names_from_an_index_list(write_file):
    names = read_class_names(write_file("test_classes.json", '["blasting sand", "busking"]'))
    entries = read_split_file(write_file("testlist07.txt", "test1/5\ntest0/6\n"), class_names=names)
    assert [e.label for e in entries] == ["busking", "blasting sand"]


def test_prefix_index_outside_the_name_list_is_an_error_with_the_line(write_file):
    path = write_file("testlist07.txt", "test0/1\ntest2/5\n")
    with pytest.raises(ValueError, match=r"testlist07.txt:2: class index 2 is outside the 2 class names"):
        read_split_file(path, class_names=["a", "b"])


def test_a_file_mixing_the_two_formats_is_rejected(write_file):
    path = write_file("list.txt", "train0//videos/clap/1.avi\nsome class/2\n")
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
    assert split.class_names == ("jump", "run")  # swim has no video left: it cannot be in an episode
    assert split.video_ids == ["j1", "j2", "r1"]
    assert split.labels == [0, 0, 1]
    report = split.report
    assert (report.listed, report.found, report.n_missing) == (6, 3, 3)
    assert report.per_class == {"jump": (3, 1), "run": (2, 1), "swim": (1, 1)}
    assert "MISSING VIDEOS" in caplog.text
    assert "3 missing in 3 classes" in caplog.text
    assert "classes with no video left: swim" in caplog.text
    assert "classes with no video left are left out: swim" in caplog.text
    listed = (tmp_path / "missing_test.txt").read_text().splitlines()
    assert [line for line in listed if not line.startswith("#")] == ["jump/j3", "run/r2", "swim/s1"]


def test_a_name_list_longer_than_the_split_file_keeps_only_the_listed_classes_in_list_order(write_file, tmp_path):
    root = tmp_path / "data"
    _touch(root, "videos/kick/k1.avi", "videos/kick/k2.avi", "videos/fencing/f1.avi")
    lines = "test1//videos/kick/k1.avi\ntest1//videos/kick/k2.avi\ntest0//videos/fencing/f1.avi\n"
    names = ["fencing", "kick", "kick_ball", "pick"]
    entries = read_split_file(write_file("test_few_shot.txt", lines), class_names=names)
    split = match_videos(entries, root, split="test", class_names=names)
    assert split.class_names == ("fencing", "kick")
    assert split.labels == [1, 1, 0]


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


# ----------------------------------------------------------------------------- layout detection
def _lists(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("air drumming/-VtLx-mcPds_000012_000022\n", encoding="utf-8")
    return folder


def test_trx_layout_takes_the_benchmarks_own_list_number_first(tmp_path):
    folder = _lists(tmp_path / "s", *(f"{s}list{n}.txt" for s in ("train", "val", "test") for n in ("03", "07")))
    files = find_split_files(folder, "ssv2-full")
    assert (files.layout, files.train.name, files.val.name, files.test.name) == (
        "trx",
        "trainlist07.txt",
        "vallist07.txt",
        "testlist07.txt",
    )
    assert find_split_files(folder, "ucf101").test.name == "testlist03.txt"
    with pytest.raises(ValueError, match=r"several complete TRX sets \(list03, list07\); name the benchmark"):
        find_split_files(folder)


def test_trx_layout_with_one_list_number_is_found_for_any_benchmark_name(tmp_path):
    folder = _lists(tmp_path / "s", "trainlist05.txt", "vallist05.txt", "testlist05.txt", "notes.txt")
    assert find_split_files(folder, "my-data").val.name == "vallist05.txt"
    assert find_split_files(folder).layout == "trx"


def test_clip_fsar_layout_is_detected_from_its_few_shot_file_names(tmp_path):
    folder = _lists(tmp_path / "s", "train_few_shot.txt", "val_few_shot.txt", "test_few_shot.txt", "a.yaml")
    files = find_split_files(folder, "hmdb51")
    assert (files.layout, files.train, files.val, files.test) == (
        "clip-fsar",
        folder / "train_few_shot.txt",
        folder / "val_few_shot.txt",
        folder / "test_few_shot.txt",
    )


@pytest.mark.parametrize(
    "present",
    [(), ("trainlist03.txt", "val_few_shot.txt", "test_few_shot.txt"), ("trainlist03.txt", "testlist03.txt")],
    ids=["empty", "mixed", "incomplete"],
)
def test_a_folder_without_a_complete_layout_raises_one_error_naming_the_folder_and_every_file_looked_for(
    tmp_path, present
):
    folder = _lists(tmp_path / "splits", *present)
    with pytest.raises(SplitFilesNotFoundError) as info:
        find_split_files(folder, "kinetics100")
    message = str(info.value)
    assert str(folder) in message
    for name in ("trainlist03.txt", "vallist03.txt", "testlist03.txt", "train_few_shot.txt", "val_few_shot.txt"):
        assert name in message
    assert "test_few_shot.txt" in message
    assert isinstance(info.value, ValueError)  # the command lines report ValueErrors
    assert isinstance(info.value, FileNotFoundError)
    assert ("found no files" in message) == (not present)


def test_a_clip_fsar_folder_without_a_val_list_says_to_supply_one(tmp_path):
    # CLIP-FSAR's trainers read only train and test lists; its epic_kitchens folder has no val list.
    folder = _lists(tmp_path / "epic", "train_few_shot.txt", "test_few_shot.txt")
    with pytest.raises(SplitFilesNotFoundError, match=r"no val_few_shot\.txt.*set data\.val_list"):
        find_split_files(folder)


def test_a_folder_holding_both_complete_layouts_or_none_at_all_is_rejected(tmp_path):
    both = _lists(tmp_path / "both", *(f"{s}list03.txt" for s in ("train", "val", "test")))
    _lists(both, *(f"{s}_few_shot.txt" for s in ("train", "val", "test")))
    with pytest.raises(ValueError, match="holds both layouts complete"):
        find_split_files(both, "ucf101")
    with pytest.raises(SplitFilesNotFoundError, match=r"split folder .*nowhere does not exist"):
        find_split_files(tmp_path / "nowhere")
