"""Split files of the public FSAR benchmarks, generic datasets, and matching listed videos to files.

Two line formats exist (``PROTOCOL.md`` §2):

- **class / video id**: ``Pouring something into something/51958``,
  ``air drumming/-VtLx-mcPds_000012_000022``, ``ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01``,
  ``brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0`` (TRX, TEAM);
- **split + class index**: ``train8/78687`` (SSv2 video id after one ``/``) and
  ``test0//train_256/blasting_sand/x.mp4`` (a path relative to the data root after ``//``; CLIP-FSAR
  family). The digits index that split's class list; names come from a separate index → name list.

``read_split_file`` reads both (the format is detected per file). ``match_videos`` pairs entries
with files under a data root and reports what is missing, per class, instead of silently shrinking
the split (Kinetics-100 attrition, ``PROTOCOL.md`` §3).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fsar_train._io import atomic_write_text

__all__ = [
    "DatasetSplit",
    "MissingReport",
    "MissingVideosError",
    "SplitEntry",
    "VideoRecord",
    "match_videos",
    "read_class_names",
    "read_csv_split",
    "read_folder_split",
    "read_split_file",
]

logger = logging.getLogger(__name__)

SplitName = Literal["train", "val", "test"]
KeyRule = Literal["basename", "youtube_id"]

#: File extensions taken as videos when indexing a data root.
VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v")

_PREFIX_LINE = re.compile(r"^(train|val|test)(\d+)/(/?)(.+)$")


@dataclass(frozen=True)
class SplitEntry:
    """One line of a split file.

    Attributes:
        video_id: the video id (``78687``, ``-VtLx-mcPds_000012_000022``) or, for ``//path`` lines,
            the file name without extension.
        label: the class name, or None when a prefix-format file was read without a name list.
        class_index: the class index in the split's class list (prefix formats), else None.
        split: ``train`` / ``val`` / ``test`` from the line prefix or the caller, or None.
        path: path relative to the data root (``//path`` lines and CSV files), else None.
        line: 1-based line number in the file (for error messages).
    """

    video_id: str
    label: str | None
    class_index: int | None = None
    split: str | None = None
    path: str | None = None
    line: int = 0


def _split_from_filename(path: Path) -> str | None:
    """``trainlist03.txt`` / ``train_few_shot.txt`` → ``train``; None when the name says nothing."""
    stem = path.stem.lower()
    for name in ("train", "val", "test"):
        if stem.startswith(name):
            return name
    return None


def read_class_names(path: str | Path) -> list[str]:
    """An index → class-name list: a JSON array, or a text file with one name per line (blank lines skipped).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "test_classes.txt"
        >>> _ = p.write_text("blasting sand\\nbusking\\n")
        >>> read_class_names(p)
        ['blasting sand', 'busking']
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        names = json.loads(text)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{path}: expected a JSON array of class names")
        return names
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_split_file(
    path: str | Path,
    *,
    split: str | None = None,
    class_names: Sequence[str] | None = None,
) -> list[SplitEntry]:
    """Read a split file in either public line format.

    Args:
        path: the split file (``trainlist03.txt``, ``test_few_shot.txt``, ...).
        split: the split of every entry when the lines do not carry one; by default taken from the
            file name when it starts with ``train`` / ``val`` / ``test``.
        class_names: index → name list for prefix-format files (``test18`` → ``class_names[18]``).

    Returns:
        One entry per non-blank line, in file order.

    Raises:
        ValueError: a line fits neither format, a file mixes the formats, or a class index is outside
            ``class_names``; the message gives the file and line number.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "testlist07.txt"
        >>> _ = p.write_text("test18/195025\\ntest0//train_256/blasting_sand/x.mp4\\n")
        >>> [(e.video_id, e.class_index, e.split, e.path) for e in read_split_file(p)]
        [('195025', 18, 'test', None), ('x', 0, 'test', 'train_256/blasting_sand/x.mp4')]
        >>> q = pathlib.Path(tempfile.mkdtemp()) / "trainlist03.txt"
        >>> _ = q.write_text("air drumming/-VtLx-mcPds_000012_000022\\n")
        >>> read_split_file(q)[0].label, read_split_file(q)[0].video_id
        ('air drumming', '-VtLx-mcPds_000012_000022')
    """
    path = Path(path)
    default_split = split if split is not None else _split_from_filename(path)
    entries: list[SplitEntry] = []
    prefix_format: bool | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        match = _PREFIX_LINE.match(line)
        if prefix_format is None:
            prefix_format = match is not None
        elif prefix_format != (match is not None):
            kind = "split+class-index" if prefix_format else "class/video-id"
            raise ValueError(f"{path}:{number}: {line!r} breaks the file's {kind} format")
        if match is not None:
            line_split, index_text, double, rest = match.groups()
            index = int(index_text)
            label = None
            if class_names is not None:
                if index >= len(class_names):
                    raise ValueError(
                        f"{path}:{number}: class index {index} is outside the {len(class_names)} class names given"
                    )
                label = class_names[index]
            rel_path = rest if double else None
            video_id = Path(rest).stem if double else rest
            entries.append(SplitEntry(video_id, label, index, line_split, rel_path, number))
        else:
            label, slash, video_id = line.rpartition("/")
            if not slash or not label or not video_id:
                raise ValueError(f"{path}:{number}: expected 'class/video_id' or '<split><index>/<id>', got {line!r}")
            entries.append(SplitEntry(video_id.strip(), label.strip(), None, default_split, None, number))
    return entries


def read_folder_split(root: str | Path, *, split: str | None = None) -> list[SplitEntry]:
    """A folder per class: ``root/<class name>/<video>.<ext>`` (videos in sub-folders count too).

    Class names are the folder names; entries are sorted by class, then path.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    entries = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for video in sorted(_iter_videos(class_dir)):
            rel = video.relative_to(root).as_posix()
            entries.append(SplitEntry(video.stem, class_dir.name, None, split, rel, 0))
    return entries


def read_csv_split(path: str | Path, *, split: str | None = None) -> list[SplitEntry]:
    """A CSV with a header: ``label`` and ``video_id`` or ``path`` columns, optional ``split``.

    Rows whose ``split`` differs from ``split`` are skipped when both are given.

    Raises:
        ValueError: the header lacks ``label``, or lacks both ``video_id`` and ``path``.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        if "label" not in columns or not ({"video_id", "path"} & columns):
            raise ValueError(f"{path}: the header needs 'label' and 'video_id' or 'path', got {sorted(columns)}")
        entries = []
        for number, row in enumerate(reader, start=2):
            row_split = (row.get("split") or "").strip() or None
            if split is not None and row_split is not None and row_split != split:
                continue
            rel = (row.get("path") or "").strip() or None
            video_id = (row.get("video_id") or "").strip() or (Path(rel).stem if rel else "")
            if not video_id:
                raise ValueError(f"{path}:{number}: row has neither video_id nor path")
            entries.append(SplitEntry(video_id, row["label"].strip(), None, row_split or split, rel, number))
    return entries


# ----------------------------------------------------------------------------- matching to files
@dataclass(frozen=True)
class VideoRecord:
    """One video of a split: its id, class index in the split's class list, and its file (if found)."""

    video_id: str
    label: int
    path: Path | None = None


@dataclass(frozen=True)
class MissingReport:
    """What a split lists and what was found on disk.

    Attributes:
        split: the split name.
        listed: videos listed in the split file.
        found: videos matched to a file.
        per_class: class name → (listed, missing), for classes with at least one missing video.
        missing: the entries without a file.
        expected: the video count the benchmark's published split has (``PROTOCOL.md`` §1), if known.
    """

    split: str
    listed: int
    found: int
    per_class: dict[str, tuple[int, int]] = field(default_factory=dict)
    missing: tuple[SplitEntry, ...] = ()
    expected: int | None = None

    @property
    def n_missing(self) -> int:
        return self.listed - self.found

    def summary(self) -> str:
        """One line: counts, the worst classes, and the expected count when it differs."""
        text = f"{self.split}: {self.found:,} of {self.listed:,} listed videos found"
        if self.n_missing:
            worst = sorted(self.per_class.items(), key=lambda kv: (-kv[1][1], kv[0]))
            shown = ", ".join(f"{name} {miss}/{listed}" for name, (listed, miss) in worst[:5])
            more = f" and {len(worst) - 5} more" if len(worst) > 5 else ""
            text += f"; {self.n_missing:,} missing in {len(worst)} classes ({shown}{more})"
            gone = [name for name, (listed, miss) in worst if miss == listed]
            if gone:
                text += f"; classes with no video left: {', '.join(gone)}"
        if self.expected is not None and self.listed != self.expected:
            text += f"; the published split has {self.expected:,} videos"
        return text

    def write(self, path: str | Path) -> None:
        """Write the missing list: a header with the per-class counts, then one ``class/video_id`` per line."""
        lines = [f"# {self.summary()}", "# class\tlisted\tmissing"]
        lines += [f"# {name}\t{listed}\t{miss}" for name, (listed, miss) in sorted(self.per_class.items())]
        lines += [f"{e.label if e.label is not None else e.class_index}/{e.path or e.video_id}" for e in self.missing]
        atomic_write_text(path, "\n".join(lines) + "\n")


class MissingVideosError(FileNotFoundError):
    """Raised by ``match_videos(..., strict=True)`` when listed videos have no file; carries the report."""

    def __init__(self, report: MissingReport) -> None:
        super().__init__(report.summary())
        self.report = report


@dataclass(frozen=True)
class DatasetSplit:
    """The videos of one split, with labels ``0..C-1`` into ``class_names``.

    Attributes:
        name: ``train`` / ``val`` / ``test``.
        class_names: ``[C]`` class names of the split (sorted, or in index order for prefix formats).
        videos: ``[V]`` the videos kept (those found on disk when matching was done).
        report: what matching found missing, or None when no matching was done.
    """

    name: str
    class_names: tuple[str, ...]
    videos: tuple[VideoRecord, ...]
    report: MissingReport | None = None

    @property
    def video_ids(self) -> list[str]:
        return [v.video_id for v in self.videos]

    @property
    def labels(self) -> list[int]:
        return [v.label for v in self.videos]


def _iter_videos(root: Path) -> Iterable[Path]:
    for dirpath, _dirnames, filenames in os.walk(root, followlinks=True):
        for name in filenames:
            if name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith("."):
                yield Path(dirpath) / name


def _key(name: str, rule: KeyRule) -> str:
    """TRX's matching rule: lower-case, spaces → ``_``; Kinetics compares only the 11-character YouTube id."""
    key = name.strip().lower().replace(" ", "_")
    return key[:11] if rule == "youtube_id" else key


def class_list(entries: Sequence[SplitEntry], class_names: Sequence[str] | None = None) -> list[str]:
    """The split's class list: ``class_names`` if given, else the sorted distinct labels.

    Prefix-format entries without names get placeholder names ``<split><index>`` (e.g. ``test18``).
    """
    if class_names is not None:
        return list(class_names)
    if entries and all(e.label is None for e in entries):
        top = max(e.class_index or 0 for e in entries)
        split = entries[0].split or "class"
        return [f"{split}{i}" for i in range(top + 1)]
    return sorted({e.label for e in entries if e.label is not None})


def match_videos(
    entries: Sequence[SplitEntry],
    root: str | Path,
    *,
    split: str = "split",
    class_names: Sequence[str] | None = None,
    key: KeyRule = "basename",
    strict: bool = False,
    missing_list: str | Path | None = None,
    expected_videos: int | None = None,
) -> DatasetSplit:
    """Pair split entries with video files under ``root`` and report what is missing.

    ``//path`` and CSV ``path`` entries are looked up at ``root / path``; the others by file name
    (without extension) anywhere under ``root``, compared with ``key``: ``basename`` (lower-case,
    spaces → ``_``) or ``youtube_id`` (the first 11 characters, TRX's Kinetics rule). When several
    files share a key, the one inside a folder named like the class wins.

    Args:
        entries: from ``read_split_file`` / ``read_folder_split`` / ``read_csv_split``.
        root: the data root.
        split: the split's name (for messages and the returned split).
        class_names: the split's class list (prefix formats); by default the sorted labels.
        key: the file-name matching rule.
        strict: raise instead of going on without the missing videos.
        missing_list: where to write the missing-video list (only written when videos are missing).
        expected_videos: the published video count of this split, compared in the summary.

    Returns:
        The split with the found videos only; ``report`` says what was dropped.

    Raises:
        MissingVideosError: ``strict`` and at least one video is missing.
        FileNotFoundError: ``root`` does not exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist")
    names = class_list(entries, class_names)
    index_of = {name: i for i, name in enumerate(names)}
    by_key: dict[str, list[Path]] = defaultdict(list)
    if any(e.path is None for e in entries):
        for video in _iter_videos(root):
            by_key[_key(video.stem, key)].append(video)
    videos: list[VideoRecord] = []
    missing: list[SplitEntry] = []
    ambiguous = 0
    for entry in entries:
        label = entry.label if entry.label is not None else names[entry.class_index or 0]
        if label not in index_of:
            raise ValueError(f"{split}: entry {entry.video_id!r} has class {label!r}, not in the class list")
        found: Path | None = None
        if entry.path is not None:
            candidate = root / entry.path
            found = candidate if candidate.is_file() else None
        else:
            candidates = by_key.get(_key(entry.video_id, key), [])
            if len(candidates) > 1:
                ambiguous += 1
                in_class = [c for c in candidates if _key(c.parent.name, "basename") == _key(label, "basename")]
                candidates = in_class or sorted(candidates)
            found = candidates[0] if candidates else None
        if found is None:
            missing.append(entry)
        else:
            videos.append(VideoRecord(entry.video_id, index_of[label], found))
    if ambiguous:
        logger.warning("%s: %d listed videos matched several files; took the one in the class folder", split, ambiguous)
    listed = Counter(e.label if e.label is not None else names[e.class_index or 0] for e in entries)
    lost = Counter(e.label if e.label is not None else names[e.class_index or 0] for e in missing)
    report = MissingReport(
        split=split,
        listed=len(entries),
        found=len(videos),
        per_class={name: (listed[name], lost[name]) for name in lost},
        missing=tuple(missing),
        expected=expected_videos,
    )
    if missing:
        if missing_list is not None:
            report.write(missing_list)
        where = f"; list written to {missing_list}" if missing_list is not None else ""
        if strict:
            raise MissingVideosError(report)
        logger.warning("MISSING VIDEOS: %s; going on without them%s", report.summary(), where)
    elif expected_videos is not None and len(entries) != expected_videos:
        logger.warning("%s", report.summary())
    else:
        logger.info("%s", report.summary())
    return DatasetSplit(split, tuple(names), tuple(videos), report)
