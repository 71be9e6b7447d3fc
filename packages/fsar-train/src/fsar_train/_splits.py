"""Split files of the public FSAR benchmarks, generic datasets, and matching listed videos to files.

Two line formats exist (``docs/protocol.md``, "Split files"):

- **class / video id**: ``Pouring something into something/51958``,
  ``air drumming/-VtLx-mcPds_000012_000022``, ``ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01``,
  ``brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0`` (TRX, TEAM);
- **split + class index**: ``train8/78687`` (SSv2 video id after one ``/``) and
  ``test0//train_256/blasting_sand/x.mp4`` (a path relative to the data root after ``//``; CLIP-FSAR
  family). The digits index that split's class list; names come from a separate index → name list.

``read_split_file`` reads both (the format is detected per file). ``match_videos`` pairs entries
with files under a data root and reports what is missing, per class, instead of silently shrinking
the split (Kinetics-100 attrition, ``docs/protocol.md``, "Video files").

Two folder layouts of the public lists exist, and ``find_split_files`` detects which one a folder
holds: TRX's ``{train,val,test}listNN.txt`` (tobyperrett/trx ``splits/``) and the CLIP-FSAR family's
``{train,val,test}_few_shot.txt`` (alibaba-mmai-research/CLIP-FSAR ``configs/projects/<Method>/<dataset>/``).
The index → name lists of the five public benchmarks ship with fsar-train
(``fsar_train/benchmarks/<benchmark>/<split>_classes.txt``, provenance in the README there), so both
layouts give the same class list and labels: ``shipped_class_names``. Names from different sources
are compared with ``normalize_class_name``; an index is never used as a name.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath
from typing import Literal

from fsar_features import atomic_write_text
from fsar_metric.errors import InputError, MissingFileError

__all__ = [
    "DatasetSplit",
    "MissingReport",
    "MissingVideosError",
    "SplitEntry",
    "SplitFiles",
    "SplitFilesNotFoundError",
    "VideoRecord",
    "find_split_files",
    "list_shipped_benchmarks",
    "match_videos",
    "normalize_class_name",
    "read_class_names",
    "read_csv_split",
    "read_folder_split",
    "read_split_file",
    "shipped_class_names",
]

logger = logging.getLogger(__name__)

SplitName = Literal["train", "val", "test"]
KeyRule = Literal["basename", "youtube_id"]

#: File extensions taken as videos when indexing a data root.
VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v")

_PREFIX_LINE = re.compile(r"^(train|val|test)(\d+)/(/?)(.+)$")
_SPLITS = ("train", "val", "test")

# A lower-case letter or digit followed by a capital: the word boundary inside UCF101's "ApplyEyeMakeup".
_LOWER_UPPER = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def normalize_class_name(name: str) -> str:
    """The form in which two spellings of one class name are compared.

    SSv2's ``[ ]`` placeholder brackets are dropped, ``_`` becomes a space, CamelCase is split at a
    lower-case letter or digit followed by a capital, everything is lower-cased, and runs of
    whitespace collapse to one space. The CamelCase rule is there because CLIP-FSAR's configs spell
    UCF101 classes ``Apply Eye Makeup`` while the videos sit in ``ApplyEyeMakeup/``. It is used
    wherever names from two sources meet (name lists, TRX class/id lines, ``//path`` class folders);
    it is not the prompt text.

    Example:
        >>> normalize_class_name("Pouring [something] into [something]")
        'pouring something into something'
        >>> normalize_class_name("ApplyEyeMakeup") == normalize_class_name("Apply Eye Makeup")
        True
        >>> normalize_class_name("blasting_sand"), normalize_class_name("brush_hair")
        ('blasting sand', 'brush hair')
    """
    text = name.replace("[", "").replace("]", "").replace("_", " ")
    return " ".join(_LOWER_UPPER.sub(" ", text).lower().split())


# ----------------------------------------------------------------------------- shipped class names
def _shipped_root() -> Traversable:
    return resources.files("fsar_train") / "benchmarks"


def list_shipped_benchmarks() -> list[str]:
    """The benchmarks whose class-name lists ship with fsar-train (at least one split), sorted.

    Example:
        >>> list_shipped_benchmarks()
        ['hmdb51', 'kinetics100', 'ssv2-full', 'ssv2-small', 'ucf101']
    """
    root = _shipped_root()
    return sorted(
        d.name for d in root.iterdir() if d.is_dir() and any((d / f"{s}_classes.txt").is_file() for s in _SPLITS)
    )


def shipped_class_names(benchmark: str, split: str) -> list[str] | None:
    """The shipped index → class-name list of a public benchmark's split, or None when none ships.

    Index ``i`` is the class of the lines ``<split><i>/...`` in the public prefix-format files, and the
    order the split's ``class_names`` follow whichever layout is read. SSv2-Full's val names are not
    published anywhere fsar could verify, so ``("ssv2-full", "val")`` gives None.

    Args:
        benchmark: a benchmark name (``list_shipped_benchmarks()``); any other name gives None.
        split: ``train``, ``val`` or ``test``.

    Raises:
        ValueError: ``split`` is not one of the three.

    Example:
        >>> shipped_class_names("kinetics100", "test")[:2]
        ['blasting sand', 'busking']
        >>> shipped_class_names("ssv2-full", "val") is None, shipped_class_names("synthetic-actions", "test")
        (True, None)
    """
    if split not in _SPLITS:
        raise InputError(f"split must be one of {', '.join(_SPLITS)}, got {split!r}")
    if not benchmark or "/" in benchmark or benchmark.startswith("."):
        return None
    path = _shipped_root() / benchmark / f"{split}_classes.txt"
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _names_hint(split: str | None) -> str:
    """How to supply the class names of ``split``: the config key and the shipped benchmarks."""
    key = f"data.{split}_names" if split in _SPLITS else "data.<split>_names"
    return (
        f"set {key} to a file with the split's class names in index order (one per line, or a JSON array), "
        f"or use a benchmark whose names ship with fsar-train (--benchmark / data.benchmark: "
        f"{', '.join(list_shipped_benchmarks())})"
    )


# ----------------------------------------------------------------------------- split-file layouts
#: The ``NN`` of TRX's ``{train,val,test}listNN.txt`` for each public benchmark (TRX's ``--split``
#: argument, not a fold): 07 for the OTAM lists, 03 for the others.
_TRX_NUMBER = {"ssv2-full": "07", "ssv2-small": "03", "kinetics100": "03", "ucf101": "03", "hmdb51": "03"}
_TRX_FILE = re.compile(r"^(train|val|test)list(\d+)\.txt$")


class SplitFilesNotFoundError(MissingFileError, InputError):
    """A split folder holds no complete layout; a ``FileNotFoundError`` and a ``ValueError`` alike."""


@dataclass(frozen=True)
class SplitFiles:
    """The three split lists found in one folder.

    Attributes:
        layout: ``trx`` (``trainlistNN.txt``: class/id lines, or ``train8/78687`` for SSv2-Full) or
            ``clip-fsar`` (``train_few_shot.txt``: ``train0/51958`` or ``train0//<path>`` lines).
        train: the meta-train list.
        val: the meta-val list.
        test: the meta-test list.
    """

    layout: Literal["trx", "clip-fsar"]
    train: Path
    val: Path
    test: Path


def find_split_files(split_dir: str | Path, benchmark: str | None = None) -> SplitFiles:
    """Detect the layout of a folder of public split lists and return its three files.

    TRX's layout is ``{train,val,test}listNN.txt``: the benchmark's own ``NN`` is taken first (07 for
    ssv2-full, 03 for the other public benchmarks); otherwise exactly one complete ``NN`` must be
    present. CLIP-FSAR's layout is ``{train,val,test}_few_shot.txt``. A folder must hold exactly one
    complete layout.

    Args:
        split_dir: the folder (e.g. a checkout's ``splits/ssv2_OTAM`` or ``configs/projects/CLIPFSAR/ssv2_full``).
        benchmark: the benchmark name, which picks TRX's ``NN``; None or an unknown name: any one ``NN``.

    Returns:
        The layout and the train / val / test paths.

    Raises:
        SplitFilesNotFoundError: the folder does not exist or holds no complete layout; one message
            names the folder, every file name looked for, and the files present.
        ValueError: the folder holds two complete layouts, or several complete TRX ``NN`` sets.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for s in ("train", "val", "test"):
        ...     _ = (d / f"{s}list03.txt").write_text("air drumming/-VtLx-mcPds_000012_000022\\n")
        >>> files = find_split_files(d, "kinetics100")
        >>> files.layout, files.val.name
        ('trx', 'vallist03.txt')
    """
    folder = Path(split_dir)
    clip_names = [f"{s}_few_shot.txt" for s in _SPLITS]
    own = _TRX_NUMBER.get(benchmark or "")
    wanted_trx = [f"{s}list{own}.txt" for s in _SPLITS] if own else [f"{s}listNN.txt" for s in _SPLITS]
    looked_for = ", ".join(wanted_trx) + " (TRX) or " + ", ".join(clip_names) + " (CLIP-FSAR)"
    if not folder.is_dir():
        raise SplitFilesNotFoundError(f"split folder {folder} does not exist; it should hold {looked_for}")
    present = sorted(p.name for p in folder.iterdir() if p.is_file())
    trx_sets: dict[str, dict[str, Path]] = defaultdict(dict)
    for name in present:
        match = _TRX_FILE.match(name)
        if match is not None:
            trx_sets[match.group(2)][match.group(1)] = folder / name
    complete = sorted(number for number, files in trx_sets.items() if len(files) == 3)
    trx: str | None = None
    if own in complete:
        trx = own
    elif len(complete) == 1:
        trx = complete[0]
        if own is not None:
            logger.warning(
                "%s: no list%s files for %s; using the only complete TRX set, list%s", folder, own, benchmark, trx
            )
    elif len(complete) > 1:
        sets = ", ".join(f"list{n}" for n in complete)
        raise InputError(
            f"split folder {folder} holds several complete TRX sets ({sets}); name the benchmark "
            f"({', '.join(sorted(_TRX_NUMBER))}) or give data.train_list / val_list / test_list explicitly"
        )
    clip = all(name in present for name in clip_names)
    if trx is not None and clip:
        raise InputError(
            f"split folder {folder} holds both layouts complete (TRX's list{trx} and CLIP-FSAR's *_few_shot.txt); "
            "keep one, or give data.train_list / val_list / test_list explicitly"
        )
    if trx is not None:
        files = trx_sets[trx]
        return SplitFiles("trx", files["train"], files["val"], files["test"])
    if clip:
        return SplitFiles("clip-fsar", *(folder / name for name in clip_names))
    if "train_few_shot.txt" in present and "test_few_shot.txt" in present:
        # CLIP-FSAR's trainers read only train and test; its epic_kitchens folder ships no val list.
        raise SplitFilesNotFoundError(
            f"split folder {folder} has train_few_shot.txt and test_few_shot.txt but no val_few_shot.txt; "
            "fsar selects checkpoints on meta-val, never on meta-test: add val_few_shot.txt (CLIP-FSAR ships "
            "one for SSv2-Full, SSv2-Small, Kinetics-100, UCF101 and HMDB51) or set data.val_list to a list "
            "whose classes are disjoint from train and test"
        )
    found = ", ".join(present) if present else "no files"
    raise SplitFilesNotFoundError(
        f"split folder {folder} holds no complete set of split lists: looked for {looked_for}; found {found}"
    )


@dataclass(frozen=True)
class SplitEntry:
    """One line of a split file.

    Attributes:
        video_id: the video id (``78687``, ``-VtLx-mcPds_000012_000022``) or, for ``//path`` lines,
            the file name without extension.
        label: the class name: from the name list when one was given, else from the line (the class
            of a class/id line, the class folder of a ``//path`` line). None only for entries built
            by hand; ``read_split_file`` never leaves an index without a name.
        class_index: the index into the split's class-name list: the line's prefix index, or for a
            class/id line read with a name list, the position of its class in that list; else None.
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
            raise InputError(f"{path}: expected a JSON array of class names")
        return names
    return [line.strip() for line in text.splitlines() if line.strip()]


def _name_index(class_names: Sequence[str], source: str) -> dict[str, int]:
    """normalised name → index; two names with one normalised form are an error."""
    index: dict[str, int] = {}
    for i, name in enumerate(class_names):
        key = normalize_class_name(name)
        if key in index:
            raise InputError(
                f"{source}: names {index[key]} ({class_names[index[key]]!r}) and {i} ({name!r}) are the same "
                "class once normalised (case, '_', '[ ]'); each class must appear once"
            )
        index[key] = i
    return index


def read_split_file(
    path: str | Path,
    *,
    split: str | None = None,
    class_names: Sequence[str] | None = None,
    names_source: str = "the class names given",
) -> list[SplitEntry]:
    """Read a split file in either public line format.

    With ``class_names`` (the split's index → name list), every entry's label is a name from that
    list: ``test18`` → ``class_names[18]``; a ``//path`` line's class folder and a class/id line's
    class must equal that name once normalised (``normalize_class_name``). Without it, labels come
    from the lines (the class of a class/id line; the folder holding a ``//path`` file), and a line
    that carries only an index is an error: an index is never used as a name.

    Args:
        path: the split file (``trainlist03.txt``, ``test_few_shot.txt``, ...).
        split: the split of every entry when the lines do not carry one; by default taken from the
            file name when it starts with ``train`` / ``val`` / ``test``.
        class_names: ``[C]`` index → name list of the split (``shipped_class_names`` or ``data.<split>_names``).
        names_source: where ``class_names`` came from, for error messages.

    Returns:
        One entry per non-blank line, in file order.

    Raises:
        ValueError: the message gives the file and line number: a line fits neither format, a file
            mixes the formats, an index-only line (``test18/195025``) has no name list, a class index is
            outside ``class_names``, a line's class folder or class disagrees with ``class_names``, or
            (without a name list) one index appears with two class folders.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "test_few_shot.txt"
        >>> _ = p.write_text("test1/195025\\ntest0//train_256/blasting_sand/x.mp4\\n")
        >>> entries = read_split_file(p, class_names=["blasting sand", "busking"])
        >>> [(e.label, e.class_index, e.split, e.path) for e in entries]
        [('busking', 1, 'test', None), ('blasting sand', 0, 'test', 'train_256/blasting_sand/x.mp4')]
        >>> q = pathlib.Path(tempfile.mkdtemp()) / "trainlist03.txt"
        >>> _ = q.write_text("air drumming/-VtLx-mcPds_000012_000022\\n")
        >>> read_split_file(q)[0].label, read_split_file(q)[0].video_id
        ('air drumming', '-VtLx-mcPds_000012_000022')
    """
    path = Path(path)
    default_split = split if split is not None else _split_from_filename(path)
    lookup = _name_index(class_names, names_source) if class_names is not None else None
    entries: list[SplitEntry] = []
    prefix_format: bool | None = None
    folder_of: dict[int, tuple[str, int]] = {}  # without names: index → (class folder, first line)
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        match = _PREFIX_LINE.match(line)
        if prefix_format is None:
            prefix_format = match is not None
        elif prefix_format != (match is not None):
            kind = "split+class-index" if prefix_format else "class/video-id"
            raise InputError(f"{path}:{number}: {line!r} breaks the file's {kind} format")
        if match is None:
            label, slash, video_id = line.rpartition("/")
            label = label.strip()
            if not slash or not label or not video_id:
                raise InputError(f"{path}:{number}: expected 'class/video_id' or '<split><index>/<id>', got {line!r}")
            index = None
            if lookup is not None and class_names is not None:
                index = lookup.get(normalize_class_name(label))
                if index is None:
                    raise InputError(
                        f"{path}:{number}: class {label!r} is not among the {len(class_names)} names of "
                        f"{names_source}; the list does not belong to this file (check data.benchmark and data.*_names)"
                    )
                label = class_names[index]
            entries.append(SplitEntry(video_id.strip(), label, index, default_split, None, number))
            continue
        line_split, index_text, double, rest = match.groups()
        index = int(index_text)
        rel_path = rest if double else None
        video_id = PurePosixPath(rest).stem if double else rest
        folder = PurePosixPath(rest).parent.name if double else ""
        if class_names is not None:
            if index >= len(class_names):
                raise InputError(
                    f"{path}:{number}: class index {index} is outside the {len(class_names)} class names "
                    f"of {names_source}"
                )
            label = class_names[index]
            if folder and normalize_class_name(folder) != normalize_class_name(label):
                raise InputError(
                    f"{path}:{number}: {line_split}{index} is {label!r} in {names_source}, but the line's class "
                    f"folder is {folder!r}; the name list does not belong to this file (check data.benchmark "
                    f"and data.{line_split}_names)"
                )
        elif folder:
            label = folder
            first = folder_of.setdefault(index, (folder, number))
            if normalize_class_name(first[0]) != normalize_class_name(folder):
                raise InputError(
                    f"{path}:{number}: {line_split}{index} lies in folder {folder!r}, but line {first[1]} puts "
                    f"{line_split}{index} in {first[0]!r}; one index must be one class"
                )
        else:
            raise InputError(
                f"{path}:{number}: {line!r} carries only a class index ({line_split}{index}); the file carries "
                f"no class names and fsar never uses an index as a name: {_names_hint(line_split)}"
            )
        entries.append(SplitEntry(video_id, label, index, line_split, rel_path, number))
    return entries


def read_folder_split(root: str | Path, *, split: str | None = None) -> list[SplitEntry]:
    """A folder per class: ``root/<class name>/<video>.<ext>`` (videos in sub-folders count too).

    Class names are the folder names; entries are sorted by class, then path.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"dataset folder {root} does not exist")
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
            raise InputError(f"{path}: the header needs 'label' and 'video_id' or 'path', got {sorted(columns)}")
        entries = []
        for number, row in enumerate(reader, start=2):
            row_split = (row.get("split") or "").strip() or None
            if split is not None and row_split is not None and row_split != split:
                continue
            rel = (row.get("path") or "").strip() or None
            video_id = (row.get("video_id") or "").strip() or (Path(rel).stem if rel else "")
            if not video_id:
                raise InputError(f"{path}:{number}: row has neither video_id nor path")
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
        expected: the video count the benchmark's published split has (``docs/train.md`` §2), if known.
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


class MissingVideosError(MissingFileError):
    """Raised by ``match_videos(..., strict=True)`` when listed videos have no file; carries the report."""

    def __init__(self, report: MissingReport) -> None:
        super().__init__(report.summary())
        self.report = report


@dataclass(frozen=True)
class DatasetSplit:
    """The videos of one split, with labels ``0..C-1`` into ``class_names``.

    Attributes:
        name: ``train`` / ``val`` / ``test``.
        class_names: ``[C]`` class names of the split: the given (or shipped) list's order, else sorted.
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

    Raises:
        ValueError: without ``class_names``, an entry has no label (only a class index).
    """
    if class_names is not None:
        return list(class_names)
    unnamed = [e for e in entries if e.label is None]
    if unnamed:
        first = unnamed[0]
        raise InputError(
            f"{len(unnamed)} entries carry only a class index (first: line {first.line}, "
            f"{first.split or ''}{first.class_index}/{first.video_id}); fsar never uses an index as a name: "
            f"{_names_hint(first.split)}"
        )
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
        class_names: the split's class list (given or shipped); entries are matched to it by index, or
            by normalised name (``normalize_class_name``); by default the sorted labels.
        key: the file-name matching rule.
        strict: raise instead of going on without the missing videos.
        missing_list: where to write the missing-video list (only written when videos are missing).
        expected_videos: the published video count of this split, compared in the summary.

    Returns:
        The split with the found videos only; ``report`` says what was dropped.

    Raises:
        MissingVideosError: ``strict`` and at least one video is missing.
        FileNotFoundError: ``root`` does not exist.
        ValueError: an entry's class is not in the class list, or an entry has only an index and no
            class list was given.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"data root {root} does not exist")
    names = class_list(entries, class_names)
    # A given list is matched by normalised name (TRX's "blasting sand" and CLIP-FSAR's "blasting_sand"
    # folder are one class); the sorted labels of a custom dataset by exact name, as they came.
    if class_names is not None:
        by_name = _name_index(names, f"{split} class names")
    else:
        by_name = {name: i for i, name in enumerate(names)}

    def class_of(entry: SplitEntry) -> int:
        if class_names is not None and entry.class_index is not None:
            if entry.class_index >= len(names):
                raise InputError(
                    f"{split}: entry {entry.video_id!r} (line {entry.line}) has class index {entry.class_index}, "
                    f"outside the {len(names)} class names"
                )
            if entry.label is not None and normalize_class_name(entry.label) != normalize_class_name(
                names[entry.class_index]
            ):
                raise InputError(
                    f"{split}: entry {entry.video_id!r} (line {entry.line}) is class {entry.label!r} but its index "
                    f"{entry.class_index} names {names[entry.class_index]!r}"
                )
            return entry.class_index
        label = entry.label or ""
        found = by_name.get(normalize_class_name(label) if class_names is not None else label)
        if found is None:
            raise InputError(
                f"{split}: entry {entry.video_id!r} (line {entry.line}) has class {label!r}, not in the "
                f"{len(names)} class names of the split"
            )
        return found

    labels = [class_of(entry) for entry in entries]
    by_key: dict[str, list[Path]] = defaultdict(list)
    if any(e.path is None for e in entries):
        for video in _iter_videos(root):
            by_key[_key(video.stem, key)].append(video)
    videos: list[VideoRecord] = []
    missing: list[SplitEntry] = []
    lost: Counter[str] = Counter()
    ambiguous = 0
    for entry, label_index in zip(entries, labels, strict=True):
        label = names[label_index]
        found: Path | None = None
        if entry.path is not None:
            candidate = root / entry.path
            found = candidate if candidate.is_file() else None
        else:
            candidates = by_key.get(_key(entry.video_id, key), [])
            if len(candidates) > 1:
                ambiguous += 1
                in_class = [c for c in candidates if normalize_class_name(c.parent.name) == normalize_class_name(label)]
                candidates = in_class or sorted(candidates)
            found = candidates[0] if candidates else None
        if found is None:
            missing.append(entry)
            lost[label] += 1
        else:
            videos.append(VideoRecord(entry.video_id, label_index, found))
    if ambiguous:
        logger.warning("%s: %d listed videos matched several files; took the one in the class folder", split, ambiguous)
    listed = Counter(names[i] for i in labels)
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
    # The split's classes are those with a video on disk, in list order: a class the file does not
    # list (a mini benchmark, a subset) or whose videos are all gone (Kinetics attrition, reported
    # above) cannot be sampled, so it is left out of the episodes' class list, with a warning.
    kept = sorted({v.label for v in videos})
    if len(kept) != len(names):
        unlisted = len(names) - len(listed)
        gone = [name for name in listed if not any(names[v.label] == name for v in videos)]
        if gone:
            logger.warning("%s: classes with no video left are left out: %s", split, ", ".join(gone))
        if unlisted:
            logger.info("%s: the split file lists %d of the %d class names", split, len(listed), len(names))
        remap = {old: new for new, old in enumerate(kept)}
        names = [names[i] for i in kept]
        videos = [dataclasses.replace(v, label=remap[v.label]) for v in videos]
    return DatasetSplit(split, tuple(names), tuple(videos), report)
