"""What the trainer reads: a ``FeatureSource`` protocol, an in-memory implementation, episode assembly.

A feature source is one split's videos with their class labels and cached features: per-frame
visual features ``[T, D]`` and, optionally, one text feature ``[D]`` per prompt (``TextPrompt``: the
prompt that made the text, label-aware or label-free), and which of the two its videos carry as
support videos (``support_prompt``). The mllm source (``CachedFeatures``, over the fsar-features
cache) implements the same protocol; ``TensorFeatures`` holds tensors in memory (tests, the
synthetic feature task, benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from fsar_metric import Episode
from fsar_metric.errors import InputError
from fsar_train._episodes import EpisodeIndices

__all__ = [
    "ConcatFeatures",
    "FeatureSource",
    "SubsetFeatures",
    "TensorFeatures",
    "TextPrompt",
    "build_episode",
    "class_anchors",
    "hold_out_classes",
]

#: The prompt a text feature was made with: ``label_aware``: the prompt that names the video's class;
#: ``label_free``: the prompt without it (what a query video is always given).
TextPrompt = Literal["label_aware", "label_free"]

#: Every ``TextPrompt``, in a fixed order.
TEXT_PROMPTS: tuple[TextPrompt, ...] = ("label_aware", "label_free")


def check_text_prompt(prompt: str, what: str = "prompt") -> TextPrompt:
    """``prompt`` as a ``TextPrompt``.

    Raises:
        ValueError: ``prompt`` is not one of ``TEXT_PROMPTS`` (the message names ``what`` and them).
    """
    for known in TEXT_PROMPTS:
        if prompt == known:
            return known
    raise InputError(f"{what} must be one of {list(TEXT_PROMPTS)}, got {prompt!r}")


def missing_prompt(prompt: str, held: frozenset[str]) -> KeyError:
    """The error of a ``FeatureSource.text`` asked for a prompt it does not hold."""
    return KeyError(f"no {prompt!r} text features; this source holds: {sorted(held) or 'no text'}")


@runtime_checkable
class FeatureSource(Protocol):
    """One split's videos, labels and cached features, addressed by position ``0..V-1``."""

    @property
    def video_ids(self) -> Sequence[str]:
        """``[V]`` video ids, in position order."""
        ...

    @property
    def labels(self) -> Sequence[int]:
        """``[V]`` class index of each video into ``class_names``."""
        ...

    @property
    def class_names(self) -> Sequence[str]:
        """``[C]`` the split's class names."""
        ...

    @property
    def text_prompts(self) -> frozenset[str]:
        """The prompts with text features: a subset of ``{"label_aware", "label_free"}``."""
        ...

    @property
    def support_prompt(self) -> TextPrompt:
        """The prompt whose text the support videos of an episode carry: ``label_aware``, or
        ``label_free`` in the ablation where the support prompt omits the class name."""
        ...

    def visual(self, positions: Sequence[int]) -> Tensor:
        """Per-frame visual features ``[B, T, D]`` of the videos at ``positions`` (any float dtype)."""
        ...

    def text(self, positions: Sequence[int], prompt: TextPrompt) -> Tensor:
        """Text features ``[B, D]`` of the videos at ``positions``, made with ``prompt``.

        Raises:
            KeyError: ``prompt`` is not in ``text_prompts`` (the message names the ones held).
        """
        ...


class ListedVideos:
    """The ``video_ids`` / ``labels`` / ``class_names`` of a ``FeatureSource`` that holds them as lists
    (``_ids``, ``_labels``, ``_names``, set by the subclass's constructor)."""

    _ids: list[str]
    _labels: list[int]
    _names: list[str]

    @property
    def video_ids(self) -> list[str]:
        return self._ids

    @property
    def labels(self) -> list[int]:
        return self._labels

    @property
    def class_names(self) -> list[str]:
        return self._names


class TensorFeatures(ListedVideos):
    """An in-memory ``FeatureSource`` built from tensors.

    Args:
        visual: ``[V, T, D]`` per-frame features.
        labels: ``[V]`` class indices into ``class_names``.
        class_names: ``[C]`` names; default ``class0 … class{C-1}``.
        video_ids: ``[V]`` ids; default ``"0" … "V-1"``.
        label_aware_text: ``[V, D]`` text made with the label-aware prompt, or None.
        label_free_text: ``[V, D]`` text made with the label-free prompt, or None.
        support_prompt: which of the two the support videos carry in an episode.

    Example:
        >>> import torch
        >>> src = TensorFeatures(torch.randn(6, 8, 16), [0, 0, 1, 1, 2, 2])
        >>> src.visual([0, 5]).shape, src.class_names, sorted(src.text_prompts), src.support_prompt
        (torch.Size([2, 8, 16]), ['class0', 'class1', 'class2'], [], 'label_aware')
    """

    def __init__(
        self,
        visual: Tensor,
        labels: Sequence[int] | Tensor,
        *,
        class_names: Sequence[str] | None = None,
        video_ids: Sequence[str] | None = None,
        label_aware_text: Tensor | None = None,
        label_free_text: Tensor | None = None,
        support_prompt: TextPrompt = "label_aware",
    ) -> None:
        if visual.dim() != 3:
            raise InputError(f"visual must be [V, T, D], got shape {list(visual.shape)}")
        n_videos = visual.shape[0]
        label_list = [int(x) for x in (labels.tolist() if isinstance(labels, Tensor) else labels)]
        if len(label_list) != n_videos:
            raise InputError(f"{len(label_list)} labels for {n_videos} videos")
        n_classes = max(label_list, default=-1) + 1
        names = list(class_names) if class_names is not None else [f"class{c}" for c in range(n_classes)]
        if label_list and (min(label_list) < 0 or max(label_list) >= len(names)):
            raise InputError(f"labels must lie in 0..{len(names) - 1}")
        ids = list(video_ids) if video_ids is not None else [str(i) for i in range(n_videos)]
        if len(ids) != n_videos:
            raise InputError(f"{len(ids)} video ids for {n_videos} videos")
        self._support_prompt = check_text_prompt(support_prompt, "support_prompt")
        self._texts: dict[str, Tensor] = {}
        for prompt, text in (("label_aware", label_aware_text), ("label_free", label_free_text)):
            if text is not None:
                if text.dim() != 2 or text.shape[0] != n_videos:
                    raise InputError(f"{prompt}_text must be [{n_videos}, D], got shape {list(text.shape)}")
                self._texts[prompt] = text
        self._visual = visual
        self._labels = label_list
        self._names = names
        self._ids = ids

    @property
    def text_prompts(self) -> frozenset[str]:
        return frozenset(self._texts)

    @property
    def support_prompt(self) -> TextPrompt:
        return self._support_prompt

    def visual(self, positions: Sequence[int]) -> Tensor:
        return self._visual[torch.as_tensor(positions, dtype=torch.long)]

    def text(self, positions: Sequence[int], prompt: TextPrompt) -> Tensor:
        if prompt not in self._texts:
            raise missing_prompt(prompt, self.text_prompts)
        return self._texts[prompt][torch.as_tensor(positions, dtype=torch.long)]

    def to(self, device: torch.device | str) -> TensorFeatures:
        """A copy with every tensor on ``device`` (episodes are then gathered there)."""
        return TensorFeatures(
            self._visual.to(device),
            self._labels,
            class_names=self._names,
            video_ids=self._ids,
            label_aware_text=self._texts["label_aware"].to(device) if "label_aware" in self._texts else None,
            label_free_text=self._texts["label_free"].to(device) if "label_free" in self._texts else None,
            support_prompt=self._support_prompt,
        )


class SubsetFeatures(ListedVideos):
    """The videos of some classes of a source, as a source of their own (no features are copied).

    Args:
        source: the source to view.
        classes: ``[C']`` class indices of ``source`` to keep, in the order of the new class indices.

    Example:
        >>> import torch
        >>> src = TensorFeatures(torch.randn(6, 2, 4), [0, 0, 1, 1, 2, 2], class_names=["a", "b", "c"])
        >>> sub = SubsetFeatures(src, [2, 0])
        >>> sub.class_names, sub.labels, sub.video_ids
        (['c', 'a'], [1, 1, 0, 0], ['0', '1', '4', '5'])
    """

    def __init__(self, source: FeatureSource, classes: Sequence[int]) -> None:
        names = list(source.class_names)
        bad = [c for c in classes if not 0 <= c < len(names)]
        if bad or len(set(classes)) != len(classes):
            raise InputError(f"classes must be distinct indices in 0..{len(names) - 1}, got {list(classes)}")
        new_index = {c: i for i, c in enumerate(classes)}
        self._source = source
        self._positions = [p for p, label in enumerate(source.labels) if label in new_index]
        all_ids = source.video_ids
        self._ids = [all_ids[p] for p in self._positions]
        self._labels = [new_index[source.labels[p]] for p in self._positions]
        self._names = [names[c] for c in classes]

    @property
    def text_prompts(self) -> frozenset[str]:
        return self._source.text_prompts

    @property
    def support_prompt(self) -> TextPrompt:
        return self._source.support_prompt

    def _map(self, positions: Sequence[int]) -> list[int]:
        return [self._positions[p] for p in positions]

    def visual(self, positions: Sequence[int]) -> Tensor:
        return self._source.visual(self._map(positions))

    def text(self, positions: Sequence[int], prompt: TextPrompt) -> Tensor:
        return self._source.text(self._map(positions), prompt)


class ConcatFeatures(ListedVideos):
    """Several sources as one: videos and classes one after the other (class names must not repeat).

    Every part must have the same text prompts and support prompt (checked here) and feature widths
    (checked when read).

    Example:
        >>> import torch
        >>> a = TensorFeatures(torch.randn(2, 2, 4), [0, 0], class_names=["a"], video_ids=["x", "y"])
        >>> b = TensorFeatures(torch.randn(2, 2, 4), [0, 1], class_names=["b", "c"], video_ids=["z", "w"])
        >>> both = ConcatFeatures([a, b])
        >>> both.class_names, both.labels, both.visual([1, 2]).shape
        (['a', 'b', 'c'], [0, 0, 1, 2], torch.Size([2, 2, 4]))
    """

    def __init__(self, parts: Sequence[FeatureSource]) -> None:
        if not parts:
            raise InputError("ConcatFeatures needs at least one source")
        prompts = {p.text_prompts for p in parts}
        if len(prompts) != 1:
            raise InputError(f"sources with different text prompts cannot be joined: {sorted(map(sorted, prompts))}")
        support_prompts = {p.support_prompt for p in parts}
        if len(support_prompts) != 1:
            raise InputError(f"sources with different support prompts cannot be joined: {sorted(support_prompts)}")
        self._parts = list(parts)
        self._names: list[str] = []
        self._labels: list[int] = []
        self._ids: list[str] = []
        self._where: list[tuple[int, int]] = []  # position → (part, position in the part)
        for i, part in enumerate(parts):
            offset = len(self._names)
            self._names.extend(part.class_names)
            self._labels.extend(offset + label for label in part.labels)
            self._ids.extend(part.video_ids)
            self._where.extend((i, p) for p in range(len(part.labels)))
        repeated = sorted({n for n in self._names if self._names.count(n) > 1})
        if repeated:
            raise InputError(f"class names occur in more than one source: {repeated}")

    @property
    def text_prompts(self) -> frozenset[str]:
        return self._parts[0].text_prompts

    @property
    def support_prompt(self) -> TextPrompt:
        return self._parts[0].support_prompt

    def _gather(self, positions: Sequence[int], read: Callable[[FeatureSource, list[int]], Tensor]) -> Tensor:
        """Read each part's positions in one call and put the rows back in the asked order."""
        by_part: dict[int, list[int]] = {}
        for p in positions:
            by_part.setdefault(self._where[p][0], []).append(p)
        rows: dict[int, Tensor] = {}
        for part, wanted in by_part.items():
            block = read(self._parts[part], [self._where[p][1] for p in wanted])
            rows.update({p: block[i] for i, p in enumerate(wanted)})
        return torch.stack([rows[p] for p in positions])

    def visual(self, positions: Sequence[int]) -> Tensor:
        return self._gather(positions, lambda part, local: part.visual(local))

    def text(self, positions: Sequence[int], prompt: TextPrompt) -> Tensor:
        return self._gather(positions, lambda part, local: part.text(local, prompt))


def hold_out_classes(
    train: FeatureSource, val: FeatureSource, n_classes: int, seed: int
) -> tuple[FeatureSource, FeatureSource]:
    """Move ``n_classes`` seeded meta-train classes from training to validation.

    A meta-val split with few classes makes every validation episode the same task (synthetic-actions:
    5 classes, one 5-way task); classes held out of meta-train widen it while staying unseen by the
    trained head. The held-out classes are drawn with ``numpy.random.default_rng([seed, n_classes])``.

    Returns:
        ``(train without them, val followed by them)``; both unchanged when ``n_classes`` is 0.

    Raises:
        ValueError: ``n_classes`` is negative or leaves meta-train fewer than 2 classes.
    """
    if n_classes == 0:
        return train, val
    total = len(train.class_names)
    if n_classes < 0 or total - n_classes < 2:
        raise InputError(
            f"train.val_train_classes = {n_classes} must be >= 0 and leave meta-train at least 2 of its {total} classes"
        )
    held = sorted(np.random.default_rng([seed, n_classes]).choice(total, size=n_classes, replace=False).tolist())
    kept = sorted(set(range(total)) - set(held))
    return SubsetFeatures(train, kept), ConcatFeatures([val, SubsetFeatures(train, held)])


def class_anchors(source: FeatureSource) -> Tensor | None:
    """``[C, D]`` one text anchor per class: the mean support text feature of its videos (the text of
    the source's ``support_prompt``: label-aware, or label-free in the label-free ablation).

    Returns None when the source has no text of its support prompt. Used by base-class losses.
    """
    if source.support_prompt not in source.text_prompts:
        return None
    labels = torch.as_tensor(list(source.labels), dtype=torch.long)
    n_classes = len(source.class_names)
    sums = None
    counts = torch.bincount(labels, minlength=n_classes).clamp_min(1)
    chunk = 4096
    for start in range(0, len(labels), chunk):
        positions = list(range(start, min(start + chunk, len(labels))))
        text = source.text(positions, source.support_prompt).float()  # [B, D]
        part = torch.zeros(n_classes, text.shape[1], dtype=text.dtype, device=text.device)
        part.index_add_(0, labels[start : start + len(positions)].to(text.device), text)
        sums = part if sums is None else sums + part
    assert sums is not None
    return sums / counts.to(sums.device)[:, None]  # [C, D]


def build_episode(
    source: FeatureSource,
    indices: EpisodeIndices,
    *,
    with_text: bool = False,
    anchors: Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = torch.float32,
) -> Episode:
    """Gather an ``fsar_metric.Episode`` from a feature source.

    Args:
        source: the split's features.
        indices: positions from an ``EpisodeSampler`` / ``EpisodeList``.
        with_text: also gather the text the source holds, each field from one prompt:

            - ``support_text [N, K, D]``: the support videos' text made with the source's
              ``support_prompt`` (label-aware, so naming the class, except in the label-free ablation);
            - ``query_text [Q, D]``: the query videos' label-free text;
            - ``support_text_free [N, K, D]``: the support videos' label-free text, whatever the
              support prompt.

            A field stays None when the source has no text of its prompt.
        anchors: ``[C, D]`` class anchors to attach (base-class losses), or None.
        device: where the episode's tensors go.
        dtype: cast for floating tensors (features are often cached in fp16).

    Returns:
        The episode: support ``[N, K, T, D]``, query ``[Q, T, D]``, query_labels ``[Q]``,
        class_ids ``[N]``, query_class_ids ``[Q]``, and text ``[N, K, D]`` / ``[Q, D]`` if asked.
    """
    n_way, n_shot = indices.n_way, indices.n_shot
    support_positions = [p for shots in indices.support for p in shots]
    support = source.visual(support_positions)  # [N*K, T, D]
    support = support.reshape(n_way, n_shot, *support.shape[1:])  # [N, K, T, D]
    query = source.visual(list(indices.query))  # [Q, T, D]
    class_ids = torch.tensor(indices.class_ids, dtype=torch.long)
    query_labels = torch.tensor(indices.query_labels, dtype=torch.long)
    texts: dict[str, Tensor | None] = {"support_text": None, "query_text": None, "support_text_free": None}
    if with_text:
        prompts = source.text_prompts
        if source.support_prompt in prompts:
            support_text = source.text(support_positions, source.support_prompt)  # [N*K, D]
            texts["support_text"] = support_text.reshape(n_way, n_shot, -1)
        if "label_free" in prompts:
            texts["query_text"] = source.text(list(indices.query), "label_free")  # [Q, D]
            texts["support_text_free"] = source.text(support_positions, "label_free").reshape(n_way, n_shot, -1)
    episode = Episode(
        support=support,
        query=query,
        query_labels=query_labels,
        class_ids=class_ids,
        query_class_ids=class_ids[query_labels],
        class_anchors=anchors,
        **texts,
    )
    return episode.to(device=device, dtype=dtype)
