"""The shipped class-name lists of the five public benchmarks, checked against real public split lines.

The fixture ``data/public_splits/<benchmark>/{trx,clip-fsar}/`` holds, for every class index of every
split, the first line of that class in each public layout (TRX and CLIP-FSAR files, unmodified;
sources in ``data/public_splits/README.md``). ``ssv2-full/cmn-overlap/`` pairs SSv2-Full (OTAM) lines
with TRX's SSv2-CMN class/id lines for the same video ids: the only public lines that name OTAM classes.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from fsar_train import (
    DataConfig,
    ExperimentConfig,
    find_split_files,
    list_shipped_benchmarks,
    load_splits,
    normalize_class_name,
    read_split_file,
    shipped_class_names,
)

FIXTURES = Path(__file__).parent / "data" / "public_splits"
SPLITS = ("train", "val", "test")

#: Published class counts (train, val, test) of each benchmark's split.
PUBLISHED_CLASSES = {
    "ssv2-full": (64, 12, 24),
    "ssv2-small": (64, 12, 24),
    "kinetics100": (64, 12, 24),
    "ucf101": (70, 10, 21),
    "hmdb51": (31, 10, 10),
}
#: SSv2-Full's val names are published nowhere fsar could verify, so none ship.
NOT_SHIPPED = {("ssv2-full", "val")}
SHIPPED = [(b, s) for b in PUBLISHED_CLASSES for s in SPLITS if (b, s) not in NOT_SHIPPED]


def _video_key(benchmark: str, video_id: str) -> str:
    # Kinetics ids differ in their time suffix between layouts; the YouTube id (11 characters) is the video.
    return video_id[:11] if benchmark == "kinetics100" else video_id


def test_the_five_public_benchmarks_ship_and_ssv2_full_val_does_not():
    assert list_shipped_benchmarks() == sorted(PUBLISHED_CLASSES)
    assert shipped_class_names("ssv2-full", "val") is None
    assert shipped_class_names("synthetic-actions", "train") is None
    with pytest.raises(ValueError, match="split must be one of train, val, test"):
        shipped_class_names("ucf101", "validation")


@pytest.mark.parametrize(("benchmark", "split"), SHIPPED)
def test_each_shipped_list_has_the_published_class_count_and_distinct_names(benchmark, split):
    names = shipped_class_names(benchmark, split)
    assert names is not None
    assert len(names) == PUBLISHED_CLASSES[benchmark][SPLITS.index(split)]
    assert len({normalize_class_name(n) for n in names}) == len(names)
    assert all(n == n.strip() and n for n in names)


@pytest.mark.parametrize("benchmark", sorted(PUBLISHED_CLASSES))
def test_a_benchmarks_splits_share_no_class(benchmark):
    seen: dict[str, str] = {}
    for split in SPLITS:
        for name in shipped_class_names(benchmark, split) or []:
            assert normalize_class_name(name) not in seen, (name, seen.get(normalize_class_name(name)), split)
            seen[normalize_class_name(name)] = split


@pytest.mark.parametrize(("benchmark", "split"), SHIPPED)
def test_clip_fsar_lines_read_with_the_shipped_names_cover_every_index_and_agree_with_their_class_folders(
    benchmark, split
):
    names = shipped_class_names(benchmark, split)
    # read_split_file itself raises when a //path line's folder disagrees with the name of its index.
    entries = read_split_file(FIXTURES / benchmark / "clip-fsar" / f"{split}_few_shot.txt", class_names=names)
    assert sorted(e.class_index for e in entries) == list(range(len(names)))
    for entry in entries:
        assert entry.label == names[entry.class_index]
        if entry.path is not None:  # Kinetics-100, UCF101, HMDB51: the class folder is in the path
            assert normalize_class_name(Path(entry.path).parent.name) == normalize_class_name(entry.label)


@pytest.mark.parametrize(("benchmark", "split"), [(b, s) for b, s in SHIPPED if b != "ssv2-full"])
def test_trx_class_names_equal_the_shipped_name_of_the_clip_fsar_index_for_the_same_video(benchmark, split):
    names = shipped_class_names(benchmark, split)
    trx = read_split_file(FIXTURES / benchmark / "trx" / f"{split}list03.txt")  # class/id lines, no name list
    clip = read_split_file(FIXTURES / benchmark / "clip-fsar" / f"{split}_few_shot.txt", class_names=names)
    index_of = {_video_key(benchmark, e.video_id): e.class_index for e in clip}
    pairs = [
        (e.label, index_of[_video_key(benchmark, e.video_id)])
        for e in trx
        if _video_key(benchmark, e.video_id) in index_of
    ]
    assert len(pairs) >= len(names) - 2  # the first lines of a class share their video in both layouts
    for trx_name, index in pairs:
        assert normalize_class_name(trx_name) == normalize_class_name(names[index])
    assert len({index for _, index in pairs}) == len(pairs)


def test_ssv2_full_names_agree_with_ssv2_cmn_class_id_lines_for_the_videos_both_list():
    folder = FIXTURES / "ssv2-full" / "cmn-overlap"
    otam = [
        re.fullmatch(r"(train|val|test)(\d+)/(\d+)", line) for line in (folder / "otam_lines.txt").read_text().split()
    ]
    cmn = {e.video_id: e.label for e in read_split_file(folder / "cmn_lines.txt")}
    checked = {"train": 0, "val": 0, "test": 0}
    for match in otam:
        assert match is not None
        split, index, video_id = match.group(1), int(match.group(2)), match.group(3)
        names = shipped_class_names("ssv2-full", split)
        if names is None:  # val: one overlapping class does not make a list
            continue
        assert normalize_class_name(cmn[video_id]) == normalize_class_name(names[index])
        checked[split] += 1
    assert checked == {"train": 33, "val": 0, "test": 2}


@pytest.mark.parametrize("benchmark", sorted(PUBLISHED_CLASSES))
def test_both_public_layouts_of_the_fixture_are_detected(benchmark):
    trx = find_split_files(FIXTURES / benchmark / "trx", benchmark)
    number = "07" if benchmark == "ssv2-full" else "03"
    assert (trx.layout, trx.train.name, trx.val.name) == ("trx", f"trainlist{number}.txt", f"vallist{number}.txt")
    clip = find_split_files(FIXTURES / benchmark / "clip-fsar", benchmark)
    assert (clip.layout, clip.test.name) == ("clip-fsar", "test_few_shot.txt")


def _touch_fixture_videos(benchmark: str, root: Path) -> None:
    """An empty file per fixture video: at the //path of CLIP-FSAR lines, else ``videos/<id>.mp4``."""
    lines = [
        line
        for layout in ("clip-fsar", "trx")
        for path in sorted((FIXTURES / benchmark / layout).glob("*.txt"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    paths = [line.split("//", 1)[1] for line in lines if "//" in line]
    keys = {_video_key(benchmark, Path(rel).stem) for rel in paths}
    for line in lines:
        video_id = line.rpartition("/")[2]
        if "//" not in line and _video_key(benchmark, video_id) not in keys:
            paths.append(f"videos/{video_id}.mp4")
            keys.add(_video_key(benchmark, video_id))
    for rel in paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()


def _config(benchmark: str, root: Path, layout: str) -> ExperimentConfig:
    files = find_split_files(FIXTURES / benchmark / layout, benchmark)
    data = DataConfig(
        benchmark=benchmark,
        format="split_files",
        root=str(root),
        train_list=str(files.train),
        val_list=str(files.val),
        test_list=str(files.test),
        key="youtube_id" if benchmark == "kinetics100" else "basename",
    )
    return dataclasses.replace(ExperimentConfig(), data=data)


@pytest.mark.parametrize("benchmark", ["ssv2-small", "kinetics100", "ucf101", "hmdb51"])
def test_both_layouts_give_the_shipped_class_list_and_the_same_label_per_video(benchmark, tmp_path):
    _touch_fixture_videos(benchmark, tmp_path)
    by_layout = {
        layout: load_splits(_config(benchmark, tmp_path, layout), progress=False) for layout in ("trx", "clip-fsar")
    }
    for split in SPLITS:
        trx, clip = by_layout["trx"][split], by_layout["clip-fsar"][split]
        assert list(trx.class_names) == list(clip.class_names) == shipped_class_names(benchmark, split)
        assert trx.report.n_missing == clip.report.n_missing == 0
        clip_label = {_video_key(benchmark, v): label for v, label in zip(clip.video_ids, clip.labels, strict=True)}
        shared = [
            (clip_label[_video_key(benchmark, v)], label)
            for v, label in zip(trx.video_ids, trx.labels, strict=True)
            if _video_key(benchmark, v) in clip_label
        ]
        assert shared
        assert all(a == b for a, b in shared)


def test_ssv2_full_val_lists_need_names_that_do_not_ship_and_the_error_says_so(tmp_path):
    _touch_fixture_videos("ssv2-full", tmp_path)
    config = _config("ssv2-full", tmp_path, "clip-fsar")
    splits = load_splits(config, splits=("train", "test"), progress=False)
    assert list(splits["test"].class_names) == shipped_class_names("ssv2-full", "test")
    with pytest.raises(ValueError, match=r"carries only a class index.*ships no val class names for ssv2-full") as info:
        load_splits(config, splits=("val",), progress=False)
    assert "data.val_names" in str(info.value)
    names = tmp_path / "val_names.txt"
    names.write_text("".join(f"val class {i}\n" for i in range(12)), encoding="utf-8")
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, val_names=str(names)))
    assert load_splits(config, splits=("val",), progress=False)["val"].class_names[8] == "val class 8"


def test_trx_lines_of_a_class_outside_the_shipped_names_are_a_clear_error(tmp_path, write_file):
    _touch_fixture_videos("ucf101", tmp_path)
    config = _config("ucf101", tmp_path, "trx")
    bad = write_file("testlist03.txt", "BlowingCandles/v_BlowingCandles_g01_c01\nMoonwalk/v_Moonwalk_g01_c01\n")
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, test_list=str(bad)))
    with pytest.raises(
        ValueError,
        match=r"testlist03\.txt:2: class 'Moonwalk' is not among the 21 names of fsar-train's shipped ucf101 test",
    ):
        load_splits(config, splits=("test",), progress=False)


def test_the_name_lists_are_package_data():
    from importlib import resources

    root = resources.files("fsar_train") / "benchmarks"
    shipped = sorted(
        f"{d.name}/{f.name}" for d in root.iterdir() if d.is_dir() for f in d.iterdir() if f.name.endswith(".txt")
    )
    assert shipped == sorted(f"{b}/{s}_classes.txt" for b, s in SHIPPED)
    assert (root / "README.md").is_file()
    assert all(re.fullmatch(r"[\w\-]+", b) for b in PUBLISHED_CLASSES)
