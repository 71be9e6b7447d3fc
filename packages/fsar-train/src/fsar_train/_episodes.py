"""Episode sampling (pure, seeded, validated) and the fixed, saved evaluation episode lists.

Episode ``i`` of a sampler is a pure function of ``(seed, i)``: it draws from its own
``random.Random`` seeded with both, never from a global generator. A training run therefore needs
no sampler state to resume, and data-parallel ranks can take disjoint episode indices.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fsar_features import atomic_write_json
from fsar_metric.errors import InputError

__all__ = ["EpisodeIndices", "EpisodeList", "EpisodeSampler", "video_list_hash"]


@dataclass(frozen=True)
class EpisodeIndices:
    """One episode as positions into a video list.

    Attributes:
        support: ``[N][K]`` positions of the support videos, way-major.
        query: ``[Q]`` positions of the queries, class by class (``n_query`` per class).
        query_labels: ``[Q]`` episode labels ``0..N-1``.
        class_ids: ``[N]`` global class ids (labels of the video list), in sampled order.
    """

    support: tuple[tuple[int, ...], ...]
    query: tuple[int, ...]
    query_labels: tuple[int, ...]
    class_ids: tuple[int, ...]

    @property
    def n_way(self) -> int:
        return len(self.class_ids)

    @property
    def n_shot(self) -> int:
        return len(self.support[0]) if self.support else 0


class EpisodeSampler:
    """N-way K-shot episodes with ``n_query`` queries per class, drawn from labels only.

    Args:
        labels: ``[V]`` class id of each video (the sampler never sees the videos).
        n_way: classes per episode (N).
        n_shot: support videos per class (K).
        n_query: query videos per class (Q = N × n_query).
        seed: episode ``i`` depends only on ``(seed, i)``.
        class_names: names of classes ``0..C-1``; given, classes with no video at all are checked too
            and errors name classes, not ids.

    Raises:
        ValueError: a size is below 1, fewer than ``n_way`` classes exist, or a class has fewer than
            ``n_shot + n_query`` videos (every such class is named with its count).

    Example:
        >>> sampler = EpisodeSampler([0, 0, 1, 1, 2, 2], n_way=2, n_shot=1, n_query=1, seed=3)
        >>> ep = sampler.episode(0)
        >>> len(ep.support), len(ep.query), ep.query_labels
        (2, 2, (0, 1))
        >>> sampler.episode(0) == ep
        True
    """

    def __init__(
        self,
        labels: Sequence[int],
        n_way: int,
        n_shot: int,
        n_query: int,
        *,
        seed: int = 0,
        class_names: Sequence[str] | None = None,
    ) -> None:
        for name, value in (("n_way", n_way), ("n_shot", n_shot), ("n_query", n_query)):
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        self.n_way, self.n_shot, self.n_query, self.seed = n_way, n_shot, n_query, seed
        by_class: dict[int, list[int]] = {}
        if class_names is not None:
            by_class = {c: [] for c in range(len(class_names))}
        for position, label in enumerate(labels):
            if class_names is not None and not 0 <= int(label) < len(class_names):
                raise InputError(f"label {label} at position {position} is outside the {len(class_names)} classes")
            by_class.setdefault(int(label), []).append(position)
        self.classes = sorted(by_class)
        self._videos = {c: tuple(v) for c, v in by_class.items()}
        need = n_shot + n_query

        def name(c: int) -> str:
            return repr(class_names[c]) if class_names is not None else f"class {c}"

        short = [f"{name(c)} has {len(self._videos[c])}" for c in self.classes if len(self._videos[c]) < need]
        if short:
            raise InputError(
                f"every class needs at least n_shot + n_query = {n_shot} + {n_query} = {need} videos; "
                + "; ".join(short)
            )
        if len(self.classes) < n_way:
            raise InputError(f"n_way = {n_way} needs at least {n_way} classes, the labels have {len(self.classes)}")

    def episode(self, index: int) -> EpisodeIndices:
        """Episode number ``index`` (any non-negative integer); the same index always gives the same episode."""
        # String seeds hash with SHA-512 in CPython: stable across runs and platforms.
        rng = random.Random(f"fsar-episode:{self.seed}:{index}")
        class_ids = rng.sample(self.classes, self.n_way)  # sampled order is kept
        support, query, query_labels = [], [], []
        for episode_label, class_id in enumerate(class_ids):
            picked = rng.sample(self._videos[class_id], self.n_shot + self.n_query)
            support.append(tuple(picked[: self.n_shot]))
            query.extend(picked[self.n_shot :])
            query_labels.extend([episode_label] * self.n_query)
        return EpisodeIndices(tuple(support), tuple(query), tuple(query_labels), tuple(class_ids))

    def episodes(self, count: int, start: int = 0) -> Iterator[EpisodeIndices]:
        """Episodes ``start .. start + count - 1``."""
        for index in range(start, start + count):
            yield self.episode(index)


def video_list_hash(video_ids: Sequence[str], labels: Sequence[int]) -> str:
    """SHA-256 of the ordered ``(video_id, label)`` list: an episode list is only valid for the same list."""
    digest = hashlib.sha256()
    for video_id, label in zip(video_ids, labels, strict=True):
        digest.update(f"{video_id}\t{int(label)}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class EpisodeList:
    """A fixed list of episodes that every method is evaluated on, saved as JSON.

    Attributes:
        episodes: the episodes.
        n_way, n_shot, n_query: the sampler's sizes (``n_query`` per class).
        seed: the sampler's seed.
        video_hash: ``video_list_hash`` of the video list the positions refer to.
        split: the split name.
    """

    episodes: tuple[EpisodeIndices, ...]
    n_way: int
    n_shot: int
    n_query: int
    seed: int
    video_hash: str
    split: str = ""

    def __len__(self) -> int:
        return len(self.episodes)

    @classmethod
    def sample(
        cls,
        labels: Sequence[int],
        video_ids: Sequence[str],
        *,
        count: int,
        n_way: int,
        n_shot: int,
        n_query: int,
        seed: int,
        split: str = "",
        class_names: Sequence[str] | None = None,
    ) -> EpisodeList:
        """Draw episodes ``0..count-1`` of ``EpisodeSampler(labels, ..., seed=seed)``."""
        sampler = EpisodeSampler(labels, n_way, n_shot, n_query, seed=seed, class_names=class_names)
        return cls(
            tuple(sampler.episodes(count)), n_way, n_shot, n_query, seed, video_list_hash(video_ids, labels), split
        )

    def save(self, path: str | Path) -> None:
        """Write the list as JSON (atomically), columns per episode field."""
        atomic_write_json(
            path,
            {
                "format": "fsar-episodes/1",
                "split": self.split,
                "n_way": self.n_way,
                "n_shot": self.n_shot,
                "n_query": self.n_query,
                "seed": self.seed,
                "video_hash": self.video_hash,
                "class_ids": [list(e.class_ids) for e in self.episodes],
                "support": [[list(s) for s in e.support] for e in self.episodes],
                "query": [list(e.query) for e in self.episodes],
                "query_labels": [list(e.query_labels) for e in self.episodes],
            },
            indent=None,
        )

    @classmethod
    def load(cls, path: str | Path, *, video_hash: str | None = None) -> EpisodeList:
        """Read a saved list.

        Raises:
            ValueError: ``video_hash`` is given and differs from the saved one (the positions would
                point at other videos), or the file is not an episode list.
        """
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != "fsar-episodes/1":
            raise InputError(f"{path} is not an fsar episode list")
        if video_hash is not None and data["video_hash"] != video_hash:
            raise InputError(
                f"{path} was sampled from another video list (hash {data['video_hash'][:12]}…, "
                f"this list has {video_hash[:12]}…); delete it or sample a new one"
            )
        episodes = tuple(
            EpisodeIndices(tuple(tuple(s) for s in sup), tuple(q), tuple(ql), tuple(c))
            for sup, q, ql, c in zip(
                data["support"], data["query"], data["query_labels"], data["class_ids"], strict=True
            )
        )
        return cls(
            episodes, data["n_way"], data["n_shot"], data["n_query"], data["seed"], data["video_hash"], data["split"]
        )

    @classmethod
    def load_or_sample(
        cls,
        path: str | Path,
        labels: Sequence[int],
        video_ids: Sequence[str],
        *,
        count: int,
        n_way: int,
        n_shot: int,
        n_query: int,
        seed: int,
        split: str = "",
        class_names: Sequence[str] | None = None,
    ) -> EpisodeList:
        """Load ``path`` if it exists (checking the video hash and sizes), else sample and save it."""
        path = Path(path)
        want = (count, n_way, n_shot, n_query, seed)
        if path.exists():
            loaded = cls.load(path, video_hash=video_list_hash(video_ids, labels))
            have = (len(loaded), loaded.n_way, loaded.n_shot, loaded.n_query, loaded.seed)
            if have != want:
                raise InputError(
                    f"{path} holds (count, n_way, n_shot, n_query, seed) = {have}, this run asks for {want}"
                )
            return loaded
        made = cls.sample(
            labels,
            video_ids,
            count=count,
            n_way=n_way,
            n_shot=n_shot,
            n_query=n_query,
            seed=seed,
            split=split,
            class_names=class_names,
        )
        made.save(path)
        return made
