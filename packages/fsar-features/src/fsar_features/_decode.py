"""Decoding hidden states into the two streams (METHOD.md §4.1): visual ``[T, D_in]`` and text ``[D_in]``.

Hidden-state index convention (transformers' ``output_hidden_states``, pinned by
``tests/features/test_decode.py``): a decoder with L layers returns L + 1 states; index 0 is the
input embeddings (projected video features already in place), index ℓ (1 ≤ ℓ < L) the output of
decoder layer ℓ, index L (= -1) the output of the last layer after the final norm, the state the LM
head reads. Negative indices count from the end (-1 = L).

::

    H    = mean over the chosen layers of hidden_states[ℓ][b]   # [S, D_in]
    vis  = H[video span]                                       # [T·V, D_in], one contiguous span
    v    = pool_visual(vis as [T, V, D_in])                    # [T, D_in]  mean (default) or CLS position
    post = H[span end:]                                        # [S_t, D_in] prompt tokens after the video
    t    = pool_text(post)                                     # [D_in]     last token (default) or mean

Layer choices, visual pooling and text pooling are small registries (``register_layer_preset``,
``register_visual_pooling``, ``register_text_pooling``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import Tensor

__all__ = [
    "LayerSpec",
    "VideoFeatures",
    "find_video_span",
    "list_layer_presets",
    "list_text_poolings",
    "list_visual_poolings",
    "pool_text",
    "pool_visual",
    "register_layer_preset",
    "register_text_pooling",
    "register_visual_pooling",
    "resolve_layers",
    "select_layers",
]

#: A layer choice: one hidden-state index, several (averaged), or a preset name (``list_layer_presets()``).
LayerSpec = int | Sequence[int] | str

_LAYER_PRESETS: dict[str, Callable[[int], tuple[int, ...]]] = {}
_VISUAL_POOLINGS: dict[str, Callable[[Tensor], Tensor]] = {}
_TEXT_POOLINGS: dict[str, Callable[[Tensor], Tensor]] = {}


def _register(table: dict, kind: str, name: str) -> Callable:
    def decorator(fn: Callable) -> Callable:
        if name in table:
            raise ValueError(f"a {kind} named {name!r} is already registered")
        table[name] = fn
        return fn

    return decorator


def register_layer_preset(name: str) -> Callable:
    """Decorator registering a layer preset: a function ``L -> tuple of hidden-state indices``."""
    return _register(_LAYER_PRESETS, "layer preset", name)


def register_visual_pooling(name: str) -> Callable:
    """Decorator registering a visual pooling: ``[T, V, D] -> [T, D]``."""
    return _register(_VISUAL_POOLINGS, "visual pooling", name)


def register_text_pooling(name: str) -> Callable:
    """Decorator registering a text pooling: ``[S_t, D] -> [D]``."""
    return _register(_TEXT_POOLINGS, "text pooling", name)


def list_layer_presets() -> list[str]:
    """Names of the layer presets, sorted."""
    return sorted(_LAYER_PRESETS)


def list_visual_poolings() -> list[str]:
    """Names of the visual poolings, sorted."""
    return sorted(_VISUAL_POOLINGS)


def list_text_poolings() -> list[str]:
    """Names of the text poolings, sorted."""
    return sorted(_TEXT_POOLINGS)


@register_layer_preset("last")
def _last(n_layers: int) -> tuple[int, ...]:
    return (n_layers,)


@register_layer_preset("last-4")
def _last_four(n_layers: int) -> tuple[int, ...]:
    # METHOD.md §4.1 ablation: the mean of the last four layers.
    return tuple(range(max(1, n_layers - 3), n_layers + 1))


@register_layer_preset("three-quarters")
def _three_quarters(n_layers: int) -> tuple[int, ...]:
    # METHOD.md §4.1 ablation: layer 24 of 32.
    return (round(0.75 * n_layers),)


@register_visual_pooling("mean")
def _mean_tokens(tokens: Tensor) -> Tensor:
    return tokens.mean(dim=1)  # [T, V, D] -> [T, D]


@register_visual_pooling("cls")
def _cls_token(tokens: Tensor) -> Tensor:
    return tokens[:, 0]  # [T, V, D] -> [T, D]: the first token of each frame (CLIP puts CLS first)


@register_text_pooling("last")
def _last_token(tokens: Tensor) -> Tensor:
    return tokens[-1]  # [S_t, D] -> [D]: where the answer would begin


@register_text_pooling("mean")
def _mean_text(tokens: Tensor) -> Tensor:
    return tokens.mean(dim=0)  # [S_t, D] -> [D]


def resolve_layers(spec: LayerSpec, n_layers: int) -> tuple[int, ...]:
    """Hidden-state indices in ``[0, L]`` for a layer choice.

    Args:
        spec: an index (0 = embeddings, ℓ = decoder layer ℓ, -1 = last), a sequence of indices (their
            mean is used), or a preset name (``last``, ``last-4``, ``three-quarters``).
        n_layers: L.

    Returns:
        Sorted, unique, non-negative indices.

    Raises:
        ValueError: an index outside ``[-(L+1), L]``, an empty sequence, or an unknown preset.

    Example:
        >>> resolve_layers(-1, 32), resolve_layers([24, -1], 32), resolve_layers("last-4", 32)
        ((32,), (24, 32), (29, 30, 31, 32))
    """
    if isinstance(spec, str):
        if spec not in _LAYER_PRESETS:
            raise ValueError(f"unknown layer preset {spec!r}; presets: {', '.join(list_layer_presets())}")
        return _LAYER_PRESETS[spec](n_layers)
    indices = list(spec) if isinstance(spec, Sequence) else [spec]
    if not indices:
        raise ValueError("an empty layer list; give at least one hidden-state index")
    out = set()
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int) or not -(n_layers + 1) <= index <= n_layers:
            raise ValueError(
                f"layer {index!r} is outside the hidden states of a {n_layers}-layer decoder: valid indices are "
                f"0 (embeddings) … {n_layers} (last), or -1 … -{n_layers + 1}"
            )
        out.add(index % (n_layers + 1))
    return tuple(sorted(out))


def select_layers(hidden_states: Sequence[Tensor], layers: tuple[int, ...]) -> Tensor:
    """The mean of the chosen hidden states, in float32: ``L + 1 × [B, S, D]`` → ``[B, S, D]``."""
    if len(layers) == 1:
        return hidden_states[layers[0]].float()
    return torch.stack([hidden_states[i].float() for i in layers]).mean(dim=0)


def find_video_span(input_ids: Tensor | Sequence[int], video_token_id: int, n_video_tokens: int) -> tuple[int, int]:
    """``(start, end)`` of the one contiguous run of video tokens.

    Args:
        input_ids: ``[S]`` token ids of one sequence.
        video_token_id: the config's video token id.
        n_video_tokens: T · V, the expected length.

    Raises:
        ValueError: no video tokens, a split span, or a length other than ``n_video_tokens``.

    Example:
        >>> find_video_span([1, 2, 9, 9, 9, 9, 3], video_token_id=9, n_video_tokens=4)
        (2, 6)
    """
    ids = torch.as_tensor(input_ids)
    positions = (ids == video_token_id).nonzero().flatten()
    if positions.numel() == 0:
        raise ValueError(f"no video tokens (id {video_token_id}) in the sequence")
    start, end = int(positions[0]), int(positions[-1]) + 1
    if end - start != positions.numel():
        raise ValueError(
            f"the video tokens (id {video_token_id}) are not one contiguous span: {positions.numel()} tokens "
            f"between positions {start} and {end - 1}"
        )
    if positions.numel() != n_video_tokens:
        raise ValueError(f"expected T·V = {n_video_tokens} video tokens, found {positions.numel()}")
    return start, end


def pool_visual(video_states: Tensor, n_frames: int, pooling: str = "mean") -> Tensor:
    """Per-frame vectors from the video span.

    Args:
        video_states: ``[T·V, D]`` hidden states at the video positions (frame-major).
        n_frames: T.
        pooling: ``mean`` or ``cls`` (``list_visual_poolings()``).

    Returns:
        ``[T, D]``.

    Raises:
        ValueError: unknown pooling, or a span not divisible by T.
    """
    if pooling not in _VISUAL_POOLINGS:
        raise ValueError(f"unknown visual pooling {pooling!r}; valid: {', '.join(list_visual_poolings())}")
    if video_states.shape[0] % n_frames:
        raise ValueError(f"a video span of {video_states.shape[0]} tokens does not split into T = {n_frames} frames")
    tokens = rearrange(video_states, "(t v) d -> t v d", t=n_frames)
    return _VISUAL_POOLINGS[pooling](tokens)


def pool_text(text_states: Tensor, pooling: str = "last") -> Tensor:
    """The text vector from the tokens after the video.

    Args:
        text_states: ``[S_t, D]``, the real (unpadded) tokens after the video span.
        pooling: ``last`` or ``mean`` (``list_text_poolings()``).

    Returns:
        ``[D]``.

    Raises:
        ValueError: unknown pooling, or no tokens.
    """
    if pooling not in _TEXT_POOLINGS:
        raise ValueError(f"unknown text pooling {pooling!r}; valid: {', '.join(list_text_poolings())}")
    if text_states.shape[0] == 0:
        raise ValueError("no text tokens after the video span: the prompt must continue after the video")
    return _TEXT_POOLINGS[pooling](text_states)


@dataclass(frozen=True)
class VideoFeatures:
    """The pooled MLLM features of one video and the recipe that made them.

    Hidden-state index convention: 0 = embeddings, ℓ = decoder layer ℓ, L = last (after the final
    norm); ``layers`` holds the non-negative indices that were averaged.

    Attributes:
        video_id: the caller's id of the video.
        visual: ``[T, D_in]`` per-frame visual features (prompt-independent, METHOD.md §3).
        text: role (``query``, ``support``) → ``[D_in]`` text feature under that role's prompt.
        prompt_ids: role → fsar-prompts id of the prompt that produced ``text[role]``.
        model_id: the backend's model id.
        layers: hidden-state indices averaged.
        visual_pooling: ``mean`` or ``cls``.
        text_pooling: ``last`` or ``mean``.
        sampling: frame sampling strategy.
        frame_indices: source frame index of each of the T frames.
        label: the class label (support-eligible videos), or None.
        n_source_frames: frames in the source video.
    """

    video_id: str
    visual: Tensor
    text: dict[str, Tensor]
    prompt_ids: dict[str, str]
    model_id: str
    layers: tuple[int, ...]
    visual_pooling: str
    text_pooling: str
    sampling: str
    frame_indices: tuple[int, ...]
    label: str | None = None
    n_source_frames: int = field(default=0)
