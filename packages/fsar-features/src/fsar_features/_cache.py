"""The on-disk feature cache: safetensors shards, JSON manifest fragments, one recipe.

Layout::

    <root>/recipe.json                          the FeatureRecipe; written once, never mixed
    <root>/shards/<writer>-<seq>.safetensors    visual [n, T, D_v], text.<role> [n_role, D_in]
    <root>/manifest/<writer>-<seq>.json         the shard's entries (and failures): its commit record

Keys: a cache holds one recipe (model, layers, pooling, sampling, frames, dtype, prompt templates),
so an entry is keyed by video id, and each text vector records the id of the prompt that made it;
together that is the key (video id, prompt id, model, layer, sampling). An entry is reused only
while its label and prompt ids are the ones a run asks for: a relabelled video is extracted again
and committed with a higher ``generation``, and readers take each video's highest generation.

Writes are atomic: every file is written to a temporary name in the same folder, flushed,
``fsync``-ed, then renamed over its final name with ``os.replace`` (and the folder is fsync-ed). A
shard is written before its manifest fragment, so a process killed at any moment leaves either a
committed shard (fragment present) or an orphan shard and temporary files that readers ignore; a
rerun skips the committed videos and redoes the rest (debris: below). Each writer (process) writes
only files named after its own writer id, so many processes can fill one cache; readers merge all
fragments. Should two fragments hold the same video at the same generation (two runs of the same
shard at the same time), the first by file name wins and ``duplicates`` reports it.

Integrity: a fragment records its shard's size (``shard_bytes``) and SHA-256 (``shard_sha256``).
Opening (``refresh``) checks every committed shard's size against it, or, for fragments written
before these fields existed, parses the safetensors header (8 + header length + the largest data
offset must be the file size). A shard that is missing, truncated or extended is *damaged*: a
warning names it, its videos are not cached (a rerun extracts them again, at a generation above the
damaged one), and ``verify()`` lists it; ``verify(full=True)`` also re-hashes every shard against its
SHA-256, which finds bytes changed in place. ``clean()`` (and so starting a writer) deletes a
damaged shard and its fragment once every video and failure in it is recorded again elsewhere.

Debris: starting a writer (``FeatureCache.writer``) deletes temporary files and uncommitted shards
that have not been modified for ``STALE_AFTER_S`` (an hour): a live writer renames its temporary
file within seconds of writing it, so only files of dead writers are that old; ``clean()``
deletes all debris at once but must run only when no writer is active. A write that fills the disk
(``ENOSPC``/``EDQUOT``) removes its temporary file and raises ``WriteError`` (from ``_atomic``, the
one write helper) naming the file and the free space; everything committed before stays readable.

Reading ``visual(ids)`` / ``text(ids, role)`` returns stacked tensors, memory-mapped through
safetensors ``safe_open`` (only the requested rows are read).

Widths: text vectors are D_in wide (``recipe.dim``, the decoder width); visual frames are D_v wide
(``recipe.visual_dim``: D_in for ``mean``/``cls`` pooling, g²·D_in for ``grid{g}``).

The recipe is the ``FeatureRecipe`` of ``fsar_features._recipe``: the extractor's, which every
``VideoFeatures`` carries; ``CacheWriter.add`` refuses features whose recipe is not the cache's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors
from torch import Tensor

from fsar_features._atomic import TEMP_GLOB, atomic_write_bytes, create_exclusive
from fsar_features._decode import VideoFeatures
from fsar_features._recipe import FORMAT_VERSION, FeatureRecipe
from fsar_metric.errors import InputError, MissingFileError

__all__ = [
    "STALE_AFTER_S",
    "STORAGE_DTYPES",
    "CacheEntry",
    "CacheFailure",
    "CacheProblem",
    "FeatureCache",
    "FeatureRecipe",
]

log = logging.getLogger(__name__)

#: Storage dtypes by name.
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
}
_TEXT_PREFIX = "text."
#: Debris (temporary files, uncommitted shards) unmodified for this many seconds belongs to a dead
#: writer: a live one renames its temporary file right after writing it. Starting a writer deletes it.
STALE_AFTER_S = 3600.0


@dataclass(frozen=True)
class CacheEntry:
    """One cached video (what a manifest fragment records).

    Attributes:
        video_id: the id.
        shard: shard file, relative to the cache root.
        visual_row: row of ``visual`` in the shard.
        text_rows: role → row of ``text.<role>`` in the shard.
        prompt_ids: role → prompt id.
        label: class label, or None.
        path: the source video as given.
        frame_indices: source frame index of each of the T frames.
        n_source_frames: frames in the source video.
        generation: 0 for a first extraction; each re-extraction (new label or prompt) adds 1, and
            readers serve the highest generation of a video.
    """

    video_id: str
    shard: str
    visual_row: int
    text_rows: dict[str, int]
    prompt_ids: dict[str, str]
    label: str | None
    path: str
    frame_indices: tuple[int, ...]
    n_source_frames: int
    generation: int = 0


@dataclass(frozen=True)
class CacheFailure:
    """A video that could not be processed, and why."""

    video_id: str
    path: str
    reason: str


@dataclass(frozen=True)
class CacheProblem:
    """A damaged committed shard, found by ``FeatureCache.verify``.

    Attributes:
        path: the shard file.
        problem: what is wrong, in one sentence (what was expected and what was found).
        superseded: True when every video of the shard has been committed again in an intact shard
            (nothing is lost; ``FeatureCache.clean`` deletes it).
    """

    path: Path
    problem: str
    superseded: bool = False

    def describe(self) -> str:
        """One line: the path and the problem."""
        note = " (its videos were extracted again since; clean() deletes it)" if self.superseded else ""
        return f"damaged shard {self.path}: {self.problem}{note}"


def _safetensors_damage(path: Path, size: int) -> str | None:
    """Why the safetensors file ``path`` of ``size`` bytes is not whole, or None when its header adds up.

    The header (8-byte little-endian length, then JSON) gives every tensor's byte range; the file
    must end exactly at the largest range end.
    """
    if size < 8:
        return f"it has {size} bytes, fewer than a safetensors header"
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if 8 + length > size:
                return f"its header claims {length} bytes but the file has {size}"
            header = json.loads(f.read(length))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        return f"its safetensors header cannot be read ({error})"
    expected = 8 + length + end
    if expected != size:
        return f"its header says {expected} bytes, the file has {size} (truncated or torn)"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class _ShardRecord:
    """A committed shard as its fragment records it, and what opening found."""

    shard: str
    fragment: str
    size: int | None
    sha256: str | None
    videos: dict[str, int]  # video id → generation
    failed: tuple[str, ...] = ()  # video ids of the failures the fragment records
    damage: str | None = None


def _recipe_diff(a: FeatureRecipe, b: FeatureRecipe, theirs: str = "this run") -> str:
    return "; ".join(f"{k}: {mine!r} (cache) vs {other!r} ({theirs})" for k, (mine, other) in a.diff(b).items())


class FeatureCache:
    """A feature cache on disk: read API for trainers, plus ``create``/``writer`` for extraction.

    Example:
        >>> cache = FeatureCache.open("features/ssv2-tiny")  # doctest: +SKIP
        >>> ids = cache.video_ids[:4]  # doctest: +SKIP
        >>> cache.visual(ids).shape, cache.text(ids, role="query").shape  # doctest: +SKIP
        (torch.Size([4, 8, 64]), torch.Size([4, 64]))
    """

    def __init__(self, root: str | os.PathLike[str], recipe: FeatureRecipe) -> None:
        self.root = Path(root)
        self.recipe = recipe
        self._entries: dict[str, CacheEntry] = {}
        self._failures: dict[str, CacheFailure] = {}
        self._duplicates: list[str] = []
        self._handles: dict[str, Any] = {}
        self._shards: dict[str, _ShardRecord] = {}
        self._generations: dict[str, int] = {}
        # shard → ((size, mtime_ns), problem) of a SHA-256 mismatch found by verify(full=True); kept
        # while the file is unchanged, so a refresh keeps treating the shard as damaged.
        self._hash_damage: dict[str, tuple[tuple[int, int], str]] = {}
        self._warned: set[tuple[str, str, bool]] = set()  # (shard, damage, lost): each warning once
        self.refresh()

    # ------------------------------------------------------------------ opening and creating
    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> FeatureCache:
        """Open an existing cache for reading.

        Raises:
            FileNotFoundError: no ``recipe.json`` under ``root``.
        """
        path = Path(root) / "recipe.json"
        if not path.is_file():
            raise MissingFileError(f"{root} is not a feature cache: it has no recipe.json")
        return cls(root, FeatureRecipe.from_json(json.loads(path.read_text())))

    @classmethod
    def create(cls, root: str | os.PathLike[str], recipe: FeatureRecipe) -> FeatureCache:
        """Open the cache at ``root`` for ``recipe``, creating it if needed (safe when many processes race).

        Raises:
            ValueError: the cache exists with another recipe; the message names both, field by field.
        """
        root = Path(root)
        for sub in ("shards", "manifest"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        data = (json.dumps(recipe.to_json(), indent=2, sort_keys=True) + "\n").encode()
        if not create_exclusive(root / "recipe.json", data):
            existing = FeatureRecipe.from_json(json.loads((root / "recipe.json").read_text()))
            if existing != recipe:
                raise InputError(
                    f"the feature cache {str(root)!r} was made with another recipe, and a cache never mixes "
                    f"recipes; differences: {_recipe_diff(existing, recipe)}. Use a new folder for this recipe."
                )
        return cls(root, recipe)

    def _check_shard(self, record: _ShardRecord) -> str | None:
        """Why a committed shard is damaged (cheap: a stat, or a header read for old fragments), or None."""
        path = self.root / record.shard
        try:
            stat = path.stat()
        except FileNotFoundError:
            return "the file is missing"
        if record.size is not None:
            if stat.st_size != record.size:
                return f"its fragment records {record.size} bytes, the file has {stat.st_size} (truncated or torn)"
        else:
            damage = _safetensors_damage(path, stat.st_size)
            if damage is not None:
                return damage
        known = self._hash_damage.get(record.shard)
        if known is not None and known[0] == (stat.st_size, stat.st_mtime_ns):
            return known[1]
        return None

    def refresh(self) -> None:
        """Re-read the manifest fragments (to see what other processes committed since).

        Every committed shard is checked cheaply (its size, or its header for old fragments); the
        videos of a damaged shard are left out (not cached) and a warning names the shard.

        Raises:
            ValueError: a fragment written for another recipe.
        """
        entries: dict[str, CacheEntry] = {}
        failures: dict[str, CacheFailure] = {}
        duplicates: list[str] = []
        shards: dict[str, _ShardRecord] = {}
        generations: dict[str, int] = {}  # video id → highest generation recorded, damaged or not
        damaged_generations: dict[str, int] = {}
        manifest = self.root / "manifest"
        names = sorted(p.name for p in manifest.glob("*.json")) if manifest.is_dir() else []
        for name in names:
            fragment = json.loads((manifest / name).read_text())
            if fragment.get("recipe") != self.recipe.hash:
                raise InputError(
                    f"manifest fragment {name} was written for recipe {fragment.get('recipe')}, "
                    f"not this cache's {self.recipe.hash}"
                )
            for raw in fragment.get("failures", []):
                failures[raw["video_id"]] = CacheFailure(raw["video_id"], raw["path"], raw["reason"])
            if not fragment["entries"]:
                continue
            record = _ShardRecord(
                shard=fragment["shard"],
                fragment=f"manifest/{name}",
                size=fragment.get("shard_bytes"),
                sha256=fragment.get("shard_sha256"),
                videos={raw["video_id"]: raw.get("generation", 0) for raw in fragment["entries"]},
                failed=tuple(raw["video_id"] for raw in fragment.get("failures", [])),
            )
            record.damage = self._check_shard(record)
            shards[record.shard] = record
            for video_id, generation in record.videos.items():
                generations[video_id] = max(generations.get(video_id, -1), generation)
            if record.damage is not None:
                self._handles.pop(record.shard, None)
                for video_id, generation in record.videos.items():
                    damaged_generations[video_id] = max(damaged_generations.get(video_id, -1), generation)
                continue
            for raw in fragment["entries"]:
                entry = CacheEntry(
                    video_id=raw["video_id"],
                    shard=fragment["shard"],
                    visual_row=raw["visual_row"],
                    text_rows=raw["text_rows"],
                    prompt_ids=raw["prompt_ids"],
                    label=raw["label"],
                    path=raw["path"],
                    frame_indices=tuple(raw["frame_indices"]),
                    n_source_frames=raw["n_source_frames"],
                    generation=raw.get("generation", 0),
                )
                current = entries.get(entry.video_id)
                if current is None or entry.generation > current.generation:
                    entries[entry.video_id] = entry
                elif entry.generation == current.generation:
                    duplicates.append(entry.video_id)
        # A video whose newest commit is damaged is not cached: an older intact entry was made for
        # another label or prompt, so serving it would be wrong.
        for video_id, generation in damaged_generations.items():
            if video_id in entries and entries[video_id].generation < generation:
                del entries[video_id]
        for record in shards.values():
            if record.damage is not None:
                lost = sorted(v for v in record.videos if v not in entries)
                key = (record.shard, record.damage, bool(lost))
                if key in self._warned:
                    continue
                self._warned.add(key)
                log.warning(
                    "feature cache shard %s is damaged: %s; %s",
                    self.root / record.shard,
                    record.damage,
                    f"its {len(lost)} videos not cached elsewhere (e.g. {', '.join(lost[:3])}) are treated as "
                    "not cached and the next extraction run extracts them again"
                    if lost
                    else "its videos were extracted again since, so nothing is lost (clean() deletes it)",
                )
        self._entries = dict(sorted(entries.items()))
        self._failures = {k: v for k, v in sorted(failures.items()) if k not in entries}
        self._duplicates = duplicates
        self._shards = shards
        self._generations = generations

    def next_generation(self, video_id: str) -> int:
        """The generation a new commit of ``video_id`` takes: one above any recorded (damaged shards
        included), so it is the one readers serve; 0 for a video never committed."""
        return self._generations.get(video_id, -1) + 1

    def verify(self, full: bool = False) -> list[CacheProblem]:
        """Check every committed shard; returns the damaged ones (empty when all are whole).

        Re-reads the manifest (``refresh``) and checks each shard's size against its fragment's
        ``shard_bytes`` (or, for fragments without it, the safetensors header against the file size).
        With ``full``, also hashes every shard against its fragment's ``shard_sha256`` (fragments
        written before it existed get only the size/header check); a mismatch marks the shard
        damaged for this cache object too, so its videos are no longer served.

        Raises:
            ValueError: a fragment written for another recipe.
        """
        self.refresh()
        if full:
            changed = False
            for record in self._shards.values():
                if record.damage is not None or record.sha256 is None:
                    continue
                path = self.root / record.shard
                digest = _sha256(path)
                if digest != record.sha256:
                    stat = path.stat()
                    problem = (
                        f"its SHA-256 is {digest[:16]}…, its fragment records {record.sha256[:16]}… "
                        "(bytes changed in place)"
                    )
                    self._hash_damage[record.shard] = ((stat.st_size, stat.st_mtime_ns), problem)
                    changed = True
            if changed:
                self.refresh()
        problems = []
        for record in self._shards.values():
            if record.damage is not None:
                superseded = all(v in self._entries for v in record.videos)  # served from another shard
                problems.append(CacheProblem(self.root / record.shard, record.damage, superseded=superseded))
        return problems

    @property
    def n_shards(self) -> int:
        """Committed shards (damaged ones included)."""
        return len(self._shards)

    def writer(
        self, writer_id: str, videos_per_shard: int = 256, *, clean_older_than: float | None = STALE_AFTER_S
    ) -> CacheWriter:
        """A writer that commits shards of ``videos_per_shard`` videos under ``writer_id``.

        Starting one first deletes debris of dead writers: temporary files and uncommitted shards
        unmodified for ``clean_older_than`` seconds (an hour by default; None keeps everything). A
        live writer's files are younger, so many writers can start and run at once.
        """
        if clean_older_than is not None:
            removed = self.clean(older_than=clean_older_than)
            if removed:
                log.info("removed %d stale files of dead writers from %s", len(removed), self.root)
        return CacheWriter(self, writer_id, videos_per_shard)

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._entries

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r}, videos={len(self)}, model={self.recipe.model_id!r})"

    @property
    def video_ids(self) -> list[str]:
        """Ids of the cached videos, sorted."""
        return list(self._entries)

    @property
    def labels(self) -> dict[str, str | None]:
        """Video id → label as recorded (None for videos extracted without one)."""
        return {k: e.label for k, e in self._entries.items()}

    @property
    def failures(self) -> list[CacheFailure]:
        """Videos that failed and have not been cached since."""
        return list(self._failures.values())

    @property
    def duplicates(self) -> list[str]:
        """Video ids committed more than once (expected empty; the first commit is the one read)."""
        return list(self._duplicates)

    def entry(self, video_id: str) -> CacheEntry:
        """The manifest entry of one video.

        Raises:
            KeyError: the video is not cached.
        """
        try:
            return self._entries[video_id]
        except KeyError:
            raise KeyError(f"video {video_id!r} is not in the feature cache {str(self.root)!r}") from None

    def _handle(self, shard: str) -> Any:
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.root / shard), framework="pt")
        return self._handles[shard]

    def _gather(self, tensor: str, rows: Sequence[tuple[str, int]], dtype: torch.dtype | None) -> Tensor:
        """Stack ``tensor`` rows ``[(shard, row), …]`` in order; contiguous runs are read in one slice."""
        parts: list[Tensor] = []
        i = 0
        while i < len(rows):
            shard, start = rows[i]
            j = i + 1
            while j < len(rows) and rows[j] == (shard, start + (j - i)):
                j += 1
            parts.append(self._handle(shard).get_slice(tensor)[start : start + (j - i)])
            i = j
        out = torch.cat(parts) if len(parts) > 1 else parts[0]
        return out if dtype is None else out.to(dtype)

    @property
    def visual_dim(self) -> int:
        """D_v, the width of the visual frame vectors (``recipe.visual_dim``)."""
        return self.recipe.visual_dim

    @property
    def text_dim(self) -> int:
        """D_in, the width of the text vectors (``recipe.dim``)."""
        return self.recipe.dim

    def visual(self, video_ids: Sequence[str], *, dtype: torch.dtype | None = None) -> Tensor:
        """Visual features of ``video_ids``, stacked: ``[B, T, D_v]`` (storage dtype unless ``dtype``).

        Raises:
            KeyError: a video that is not cached (the message names it).
        """
        return self._gather("visual", [(self.entry(v).shard, self.entry(v).visual_row) for v in video_ids], dtype)

    def text(self, video_ids: Sequence[str], role: str = "query", *, dtype: torch.dtype | None = None) -> Tensor:
        """Text features of ``video_ids`` under ``role``'s prompt, stacked: ``[B, D_in]``.

        Raises:
            ValueError: a role the cache did not run, or videos without that role (e.g. ``support``
                for a video extracted without a label); the message names them.
            KeyError: a video that is not cached.
        """
        if role not in self.recipe.roles:
            raise InputError(f"unknown role {role!r} for this cache; its roles: {', '.join(self.recipe.roles)}")
        entries = [self.entry(v) for v in video_ids]
        missing = [e.video_id for e in entries if role not in e.text_rows]
        if missing:
            raise InputError(f"videos without a {role!r} text feature (no label?): {missing[:10]}")
        return self._gather(_TEXT_PREFIX + role, [(e.shard, e.text_rows[role]) for e in entries], dtype)

    def features(self, video_id: str) -> VideoFeatures:
        """One cached video as ``VideoFeatures`` (in the storage dtype)."""
        entry = self.entry(video_id)
        return VideoFeatures(
            video_id=video_id,
            visual=self.visual([video_id])[0],
            text={role: self.text([video_id], role)[0] for role in entry.text_rows},
            prompt_ids=dict(entry.prompt_ids),
            recipe=self.recipe,
            frame_indices=entry.frame_indices,
            label=entry.label,
            n_source_frames=entry.n_source_frames,
        )

    def clean(self, older_than: float | None = None) -> list[Path]:
        """Delete debris: temporary files, shards no fragment commits, superseded damaged shards.

        With ``older_than=None`` every temporary file and uncommitted shard goes, so run it only when
        no writer is active (a live writer's shard is uncommitted for a moment). With ``older_than``
        (seconds) only those unmodified for that long go, which is safe while writers run (starting
        a writer does this). A damaged shard (see ``verify``) is deleted with its fragment only when
        every one of its videos has been committed again in an intact shard and every failure the
        fragment records is cached (whatever the age), so deleting it loses nothing.

        Returns:
            The deleted paths.
        """
        problems = self.verify()  # re-reads the manifest: every committed shard is in self._shards
        committed = set(self._shards)
        cutoff = None if older_than is None else time.time() - older_than
        removed = []

        def remove(path: Path) -> None:
            try:
                if cutoff is not None and path.stat().st_mtime > cutoff:
                    return
                path.unlink()
            except FileNotFoundError:  # a writer renamed or another cleaner removed it meanwhile
                return
            removed.append(path)

        for folder in (self.root / "shards", self.root / "manifest", self.root):
            for path in folder.glob(TEMP_GLOB):
                remove(path)
        for path in (self.root / "shards").glob("*.safetensors"):
            if f"shards/{path.name}" not in committed:
                remove(path)
        for problem in problems:
            record = self._shards[problem.path.relative_to(self.root).as_posix()]
            # Deleting the fragment must lose nothing: its videos and its failures are recorded elsewhere.
            if problem.superseded and all(v in self._entries for v in record.failed):
                for rel in (record.fragment, record.shard):  # the fragment first: no record of a missing shard
                    (self.root / rel).unlink(missing_ok=True)
                    removed.append(self.root / rel)
        if any(p.suffix == ".json" and p.parent.name == "manifest" for p in removed):
            self.refresh()
        return removed


class CacheWriter:
    """Buffers features and commits them as (shard, fragment) pairs; see the module docstring.

    Args:
        cache: the cache (its recipe gives the storage dtype).
        writer_id: unique per process and run (file names start with it).
        videos_per_shard: videos per shard file; a kill loses at most this many uncommitted videos.
    """

    def __init__(self, cache: FeatureCache, writer_id: str, videos_per_shard: int = 256) -> None:
        if videos_per_shard < 1:
            raise InputError(f"videos_per_shard must be at least 1, got {videos_per_shard}")
        self.cache = cache
        self.writer_id = writer_id
        self.videos_per_shard = videos_per_shard
        self._dtype = STORAGE_DTYPES[cache.recipe.storage_dtype]
        self._buffer: list[tuple[VideoFeatures, str, int]] = []
        self._failures: list[CacheFailure] = []
        self._seq = 0
        self.committed = 0

    def add(self, features: VideoFeatures, path: str | os.PathLike[str], *, generation: int = 0) -> None:
        """Queue one video's features; commits a shard when the buffer is full.

        Args:
            features: the video's features: visual ``[T, D_v]``, each text ``[D_in]``.
            path: its source file.
            generation: 0 for a new video; one more than the cached entry's when it replaces it.

        Raises:
            ValueError: features made with another recipe than the cache's (the message names the
                differences), or shapes other than the recipe's (it names the video and both shapes).
        """
        recipe = self.cache.recipe
        if features.recipe != recipe:
            raise InputError(
                f"video {features.video_id!r} was extracted with another recipe than the cache "
                f"{str(self.cache.root)!r} holds, and a cache never mixes recipes; differences: "
                f"{_recipe_diff(recipe, features.recipe, 'the video')}"
            )
        expected = (recipe.n_frames, recipe.visual_dim)
        if tuple(features.visual.shape) != expected:
            raise InputError(
                f"video {features.video_id!r} has visual features of shape {list(features.visual.shape)}, and this "
                f"cache's recipe stores [T, D_v] = {list(expected)}"
            )
        for role, vector in features.text.items():
            if tuple(vector.shape) != (recipe.dim,):
                raise InputError(
                    f"video {features.video_id!r} has a {role!r} text vector of shape {list(vector.shape)}, and this "
                    f"cache's recipe stores [D_in] = [{recipe.dim}]"
                )
        self._buffer.append((features, str(path), generation))
        if len(self._buffer) >= self.videos_per_shard:
            self.flush()

    def add_failure(self, video_id: str, path: str | os.PathLike[str], reason: str) -> None:
        """Record a video that could not be processed (committed with the next shard)."""
        self._failures.append(CacheFailure(video_id, str(path), reason))

    def _tensors(self) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
        visual, texts, entries = [], {}, []
        for row, (feat, path, generation) in enumerate(self._buffer):
            visual.append(feat.visual)
            text_rows = {}
            for role, vector in feat.text.items():
                texts.setdefault(role, []).append(vector)
                text_rows[role] = len(texts[role]) - 1
            entries.append(
                {
                    "video_id": feat.video_id,
                    "visual_row": row,
                    "text_rows": text_rows,
                    "prompt_ids": feat.prompt_ids,
                    "label": feat.label,
                    "path": path,
                    "frame_indices": list(feat.frame_indices),
                    "n_source_frames": feat.n_source_frames,
                    "generation": generation,
                }
            )
        tensors = {"visual": torch.stack(visual)}  # [n, T, D_v]
        tensors.update({_TEXT_PREFIX + role: torch.stack(v) for role, v in texts.items()})  # [n_role, D_in]
        out = {}
        for name, tensor in tensors.items():
            stored = tensor.detach().to("cpu", self._dtype).contiguous()
            if not torch.isfinite(stored).all():
                raise InputError(
                    f"features overflow {self.cache.recipe.storage_dtype} ({name}: largest |x| = "
                    f"{tensor.abs().max().item():.3g}); use storage_dtype='bfloat16' or 'float32'"
                )
            out[name] = stored
        return out, entries

    def flush(self) -> None:
        """Commit buffered features and failures: shard first, then its manifest fragment.

        Raises:
            WriteError: the file system refused the write (a full disk or quota names the file and the
                free space); the buffer is kept (a later flush retries), no temporary file is left,
                and everything committed before stays readable.
            ValueError: features beyond the storage dtype's range.
        """
        if not self._buffer and not self._failures:
            return
        name = f"{self.writer_id}-{self._seq:06d}"
        shard = None
        entries: list[dict[str, Any]] = []
        if self._buffer:
            tensors, entries = self._tensors()
            shard = f"shards/{name}.safetensors"
            data = save_safetensors(tensors, metadata={"recipe": self.cache.recipe.hash, "writer": self.writer_id})
            atomic_write_bytes(self.cache.root / shard, data, durable=True)
        fragment = {
            "format": FORMAT_VERSION,
            "recipe": self.cache.recipe.hash,
            "writer": self.writer_id,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "shard": shard,
            "entries": entries,
            "failures": [dataclasses.asdict(f) for f in self._failures],
        }
        if shard is not None:
            fragment["shard_bytes"] = len(data)
            fragment["shard_sha256"] = hashlib.sha256(data).hexdigest()
        fragment_bytes = (json.dumps(fragment) + "\n").encode()
        atomic_write_bytes(self.cache.root / "manifest" / f"{name}.json", fragment_bytes, durable=True)
        self.committed += len(entries)
        self._seq += 1
        self._buffer, self._failures = [], []
        log.debug("committed %s: %d videos", name, len(entries))

    def pending(self) -> Iterable[str]:
        """Ids of the buffered, not yet committed videos."""
        return [f.video_id for f, _, _ in self._buffer]
