"""From a ``DataConfig`` to the meta-train / meta-val / meta-test splits, with missing-video reports."""

from __future__ import annotations

import logging
from pathlib import Path

from fsar_metric.errors import InputError
from fsar_train._config import ExperimentConfig
from fsar_train._splits import (
    DatasetSplit,
    SplitEntry,
    list_shipped_benchmarks,
    match_videos,
    read_class_names,
    read_csv_split,
    read_folder_split,
    read_split_file,
    shipped_class_names,
)
from fsar_train._synthetic import generate_synthetic_actions

__all__ = ["SPLITS", "load_splits"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def _entries(config: ExperimentConfig, split: str) -> tuple[list[SplitEntry], list[str] | None]:
    """The split's entries and its class-name list: ``data.<split>_names``, else the names shipped
    for ``data.benchmark`` (both layouts then give the shipped order), else None (sorted labels)."""
    data = config.data
    root = Path(data.root)
    names_file = getattr(data, f"{split}_names")
    if names_file:
        names: list[str] | None = read_class_names(names_file)
        source = f"data.{split}_names ({names_file})"
    else:
        names = shipped_class_names(data.benchmark, split)
        source = f"fsar-train's shipped {data.benchmark} {split} class names"
    if data.format in ("synthetic", "split_files"):
        list_file = root / "splits" / f"{split}.txt" if data.format == "synthetic" else getattr(data, f"{split}_list")
        if not list_file:
            raise InputError(f"data.{split}_list is empty; format 'split_files' needs the {split} split file")
        try:
            return read_split_file(list_file, split=split, class_names=names, names_source=source), names
        except ValueError as err:
            if names is None and data.benchmark in list_shipped_benchmarks():
                raise InputError(
                    f"{err}. fsar-train ships no {split} class names for {data.benchmark} (no public source "
                    f"publishes them in a form fsar could verify), so data.{split}_names must supply them"
                ) from None
            raise
    if data.format == "folders":
        return read_folder_split(root / split, split=split), names
    if not data.csv:
        raise InputError("data.csv is empty; format 'csv' needs the CSV file")
    return read_csv_split(data.csv, split=split), names


def load_splits(
    config: ExperimentConfig,
    *,
    splits: tuple[str, ...] = SPLITS,
    report_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, DatasetSplit]:
    """Read the configured splits and match them to files under ``data.root``.

    Class names come from ``data.<split>_names`` or, when that is empty, from the lists shipped for
    ``data.benchmark`` (``shipped_class_names``); a split's ``class_names`` then follow that list's
    order whichever public layout the split file has. Without either, the sorted labels.

    For ``format = "synthetic"`` the dataset is generated first when missing (idempotent). Missing
    videos are reported per class (``report_dir/missing_<split>.txt``); with ``data.strict`` they
    are an error, otherwise the split goes on without them and a warning gives the counts.

    Raises:
        MissingVideosError: ``data.strict`` and videos are missing.
        ValueError: a split file needed by the format is not configured; an index-only split file has no
            class names; a line's class disagrees with the class names.
    """
    data = config.data
    if data.format == "synthetic":
        generate_synthetic_actions(data.root, config.synthetic, progress=progress)
    out = {}
    for split in splits:
        entries, names = _entries(config, split)
        expected = data.expected_videos[SPLITS.index(split)] if len(data.expected_videos) == 3 else None
        out[split] = match_videos(
            entries,
            data.root,
            split=split,
            class_names=names,
            key=data.key,
            strict=data.strict,
            missing_list=Path(report_dir) / f"missing_{split}.txt" if report_dir is not None else None,
            expected_videos=expected,
        )
        if (
            len(data.expected_classes) == 3
            and len(out[split].class_names) != data.expected_classes[SPLITS.index(split)]
        ):
            logger.warning(
                "%s: %d classes listed, the published split has %d",
                split,
                len(out[split].class_names),
                data.expected_classes[SPLITS.index(split)],
            )
    return out
