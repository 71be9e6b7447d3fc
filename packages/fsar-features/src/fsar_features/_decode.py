"""Decoding hidden states into the two streams: visual ``[T, D_in]`` and text ``[D_in]``.

Options and defaults: docs/features.md, "Design" and "Decoding options".

Hidden-state index convention (transformers' ``output_hidden_states``, pinned by
``tests/features/test_decode.py``): a decoder with L layers returns L + 1 states; index 0 is the
input embeddings (projected video features already in place), index ℓ (1 ≤ ℓ < L) the output of
decoder layer ℓ, index L (= -1) the output of the last layer after the final norm, the state the LM
head reads. Negative indices count from the end (-1 = L).

::

    H    = mean over the chosen layers of hidden_states[ℓ][b]   # [S, D_in]
    vis  = H[video span]                                       # [T·V, D_in], one contiguous span
    v    = pool_visual(vis as [T, V, D_in])                    # [T, D_v]   mean (default), cls, gridG
    v    = v - v.mean(over T)   (temporal_centring only)       # [T, D_v]
    post = H[span end:]                                        # [S_t, D_in] prompt tokens after the video
    t    = pool_text(post)                                     # [D_in]     last (default), mean, label

D_v is D_in for ``mean`` and ``cls`` and G²·D_in for ``gridG`` (G × G cells of the frame's patch grid,
CLS dropped, concatenated in row-major cell order). ``label`` averages the class-name tokens of a
label-aware prompt (``fsar_features.label_token_positions`` finds them).

Layer choices, visual pooling and text pooling are small registries (``register_layer_preset``,
``register_visual_pooling``, ``register_text_pooling``). A pooling receives its tokens and a small
typed context (``VisualPoolingContext``, ``TextPoolingContext``) with what it may need beyond them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from einops import rearrange, reduce
from torch import Tensor

from fsar_features._recipe import FeatureRecipe, register_visual_width
from fsar_metric.errors import InputError
from fsar_metric.registry import NoDeclared, Registry

__all__ = [
    "LayerSpec",
    "TextPoolingContext",
    "VideoFeatures",
    "VisualPoolingContext",
    "find_video_span",
    "list_layer_presets",
    "list_text_poolings",
    "list_visual_poolings",
    "patch_grid_side",
    "pool_text",
    "pool_visual",
    "register_layer_preset",
    "register_text_pooling",
    "register_visual_pooling",
    "resolve_layers",
    "select_layers",
    "temporal_centre",
    "text_pooling_needs_label",
]

#: A layer choice: one hidden-state index, several (averaged), or a preset name (``list_layer_presets()``).
LayerSpec = int | Sequence[int] | str


@dataclass(frozen=True)
class VisualPoolingContext:
    """What a visual pooling may need beyond the tokens of the frames.

    Attributes:
        has_cls: True when each frame's first video token is the vision tower's CLS token (Video-LLaVA);
            the other V − 1 tokens are then the frame's patch grid, row-major. False: all V are.
    """

    has_cls: bool = False


@dataclass(frozen=True)
class TextPoolingContext:
    """What a text pooling may need beyond the tokens after the video.

    Attributes:
        label_positions: indices into the ``[S_t]`` tokens after the video of the class-name tokens
            of a label-aware prompt (``label_token_positions``); None for a prompt without a label.
    """

    label_positions: tuple[int, ...] | None = None


@dataclass(frozen=True)
class TextPoolingSpec:
    """What a text pooling declares when it registers.

    Attributes:
        needs_label: it reads ``TextPoolingContext.label_positions`` (a label-aware role only).
    """

    needs_label: bool = False


LAYER_PRESETS: Registry[Callable[[int], tuple[int, ...]], NoDeclared] = Registry("layer preset")
VISUAL_POOLINGS: Registry[Callable[[Tensor, VisualPoolingContext], Tensor], NoDeclared] = Registry("visual pooling")
TEXT_POOLINGS: Registry[Callable[[Tensor, TextPoolingContext], Tensor], TextPoolingSpec] = Registry(
    "text pooling", declared=TextPoolingSpec
)


def register_layer_preset(name: str) -> Callable:
    """Decorator registering a layer preset: a function ``L -> tuple of hidden-state indices``."""
    return LAYER_PRESETS.register(name)


def register_visual_pooling(name: str, *, width: Callable[[int], int] | None = None) -> Callable:
    """Decorator registering a visual pooling ``fn(tokens, context) -> pooled``.

    ``tokens`` is ``[T, V, D]``, ``context`` a ``VisualPoolingContext``; the result is ``[T, D_v]``.

    Args:
        name: the registry name.
        width: the width rule D → D_v (None: D_v = D). A recipe derives its ``visual_dim`` from it;
            the extractor measures D_v with a dry run and records it in the recipe only where it
            differs from the rule.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorator(fn: Callable) -> Callable:
        VISUAL_POOLINGS.register(name, fn)
        register_visual_width(name, width if width is not None else _same_width)
        return fn

    return decorator


def _same_width(dim: int) -> int:
    return dim


def register_text_pooling(name: str, *, needs_label: bool = False) -> Callable:
    """Decorator registering a text pooling ``fn(tokens, context) -> pooled``: ``[S_t, D] -> [D]``.

    Args:
        name: the registry name.
        needs_label: True when ``fn`` reads ``context.label_positions``: such a pooling applies only to
            a label-aware role (``support``), and the extractor then locates the class-name tokens.

    Raises:
        ValueError: ``name`` is already registered.
    """
    return TEXT_POOLINGS.register(name, needs_label=needs_label)


def text_pooling_needs_label(name: str) -> bool:
    """True when the text pooling ``name`` averages class-name tokens (it needs a label-aware prompt).

    Raises:
        ValueError: an unknown pooling.
    """
    return TEXT_POOLINGS.entry(name).declared.needs_label


def list_layer_presets() -> list[str]:
    """Names of the layer presets, sorted."""
    return LAYER_PRESETS.names()


def list_visual_poolings() -> list[str]:
    """Names of the visual poolings, sorted."""
    return VISUAL_POOLINGS.names()


def list_text_poolings() -> list[str]:
    """Names of the text poolings, sorted."""
    return TEXT_POOLINGS.names()


@register_layer_preset("last")
def _last(n_layers: int) -> tuple[int, ...]:
    return (n_layers,)


@register_layer_preset("last-4")
def _last_four(n_layers: int) -> tuple[int, ...]:
    # Layer ablation (docs/features.md, "Design"): the mean of the last four layers.
    return tuple(range(max(1, n_layers - 3), n_layers + 1))


@register_layer_preset("three-quarters")
def _three_quarters(n_layers: int) -> tuple[int, ...]:
    # Layer ablation (docs/features.md, "Design"): three quarters of the depth, layer 24 of 32.
    return (round(0.75 * n_layers),)


@register_visual_pooling("mean")
def _mean_tokens(tokens: Tensor, context: VisualPoolingContext) -> Tensor:
    return tokens.mean(dim=1)  # [T, V, D] -> [T, D]: every token, CLS included (the original default)


@register_visual_pooling("cls")
def _cls_token(tokens: Tensor, context: VisualPoolingContext) -> Tensor:
    return tokens[:, 0]  # [T, V, D] -> [T, D]: the first token of each frame (CLIP puts CLS first)


def patch_grid_side(n_tokens: int, has_cls: bool) -> int:
    """The side of the square patch grid of a frame of ``n_tokens`` video tokens (CLS dropped when there is one).

    Raises:
        ValueError: the patch tokens do not form a square grid.

    Example:
        >>> patch_grid_side(257, has_cls=True), patch_grid_side(144, has_cls=False)
        (16, 12)
    """
    n_patches = n_tokens - int(has_cls)
    side = math.isqrt(max(n_patches, 0))
    if n_patches < 1 or side * side != n_patches:
        cls = " after dropping the CLS token" if has_cls else " (no CLS token)"
        raise InputError(
            f"a frame's {n_patches} patch tokens{cls} are not a square grid, so grid pooling is not defined "
            f"(V = {n_tokens} video tokens per frame)"
        )
    return side


def _grid_pooling(cells: int) -> Callable[[Tensor, VisualPoolingContext], Tensor]:
    def pool(tokens: Tensor, context: VisualPoolingContext) -> Tensor:
        side = patch_grid_side(tokens.shape[1], context.has_cls)
        if side % cells:
            raise InputError(
                f"grid{cells} pooling needs the {side}×{side} patch grid to split into {cells}×{cells} equal "
                f"cells, and {cells} does not divide {side}; valid: grid{{g}} with g dividing {side}"
            )
        patches = tokens[:, 1:] if context.has_cls else tokens  # [T, P, D], P = side² in row-major order
        # Patch p = (row, col) = (gh·ph_n + ph, gw·pw_n + pw): cell (gh, gw) averages its ph × pw patches;
        # cells are concatenated row-major, each cell's D values together.
        return reduce(patches, "t (gh ph gw pw) d -> t (gh gw d)", "mean", gh=cells, gw=cells, ph=side // cells)

    pool.__doc__ = f"``[T, V, D] -> [T, {cells}²·D]``: {cells}×{cells} average pooling of the frame's patch grid."
    return pool


def _grid_width(cells: int) -> Callable[[int], int]:
    def width(dim: int) -> int:
        return cells * cells * dim  # g × g cells of D values each

    return width


for _cells in (1, 2, 4):
    register_visual_pooling(f"grid{_cells}", width=_grid_width(_cells))(_grid_pooling(_cells))
del _cells


@register_text_pooling("last")
def _last_token(tokens: Tensor, context: TextPoolingContext) -> Tensor:
    return tokens[-1]  # [S_t, D] -> [D]: where the answer would begin


@register_text_pooling("mean")
def _mean_text(tokens: Tensor, context: TextPoolingContext) -> Tensor:
    return tokens.mean(dim=0)  # [S_t, D] -> [D]


@register_text_pooling("label", needs_label=True)
def _label_text(tokens: Tensor, context: TextPoolingContext) -> Tensor:
    if not context.label_positions:
        raise InputError(
            "text pooling 'label' averages the class-name tokens of a label-aware prompt, and this prompt has "
            "none (a query prompt never carries a class name); use 'last' or 'mean' for it"
        )
    positions = torch.tensor(context.label_positions, dtype=torch.long, device=tokens.device)
    if int(positions.min()) < 0 or int(positions.max()) >= tokens.shape[0]:
        raise InputError(
            f"label token positions {list(context.label_positions)} fall outside the {tokens.shape[0]} tokens "
            f"after the video"
        )
    return tokens[positions].mean(dim=0)  # [S_t, D] -> [n_label, D] -> [D]


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
        return LAYER_PRESETS.get(spec)(n_layers)
    indices = list(spec) if isinstance(spec, Sequence) else [spec]
    if not indices:
        raise InputError("an empty layer list; give at least one hidden-state index")
    out = set()
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int) or not -(n_layers + 1) <= index <= n_layers:
            raise InputError(
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
        raise InputError(f"no video tokens (id {video_token_id}) in the sequence")
    start, end = int(positions[0]), int(positions[-1]) + 1
    if end - start != positions.numel():
        raise InputError(
            f"the video tokens (id {video_token_id}) are not one contiguous span: {positions.numel()} tokens "
            f"between positions {start} and {end - 1}"
        )
    if positions.numel() != n_video_tokens:
        raise InputError(f"expected T·V = {n_video_tokens} video tokens, found {positions.numel()}")
    return start, end


def pool_visual(video_states: Tensor, n_frames: int, pooling: str = "mean", *, has_cls: bool = False) -> Tensor:
    """Per-frame vectors from the video span.

    Args:
        video_states: ``[T·V, D]`` hidden states at the video positions (frame-major).
        n_frames: T.
        pooling: ``mean``, ``cls``, ``grid1``, ``grid2``, ``grid4`` (``list_visual_poolings()``).
        has_cls: each frame's first token is CLS (``FeatureBackend.has_cls``); grid poolings drop it.

    Returns:
        ``[T, D_v]``: D_v = D for ``mean`` and ``cls``, g²·D for ``grid{g}``.

    Raises:
        ValueError: unknown pooling, a span not divisible by T, or (grid) patch tokens that are not a
            square grid or a grid side that g does not divide.
    """
    pool = VISUAL_POOLINGS.get(pooling)
    if video_states.shape[0] % n_frames:
        raise InputError(f"a video span of {video_states.shape[0]} tokens does not split into T = {n_frames} frames")
    tokens = rearrange(video_states, "(t v) d -> t v d", t=n_frames)
    return pool(tokens, VisualPoolingContext(has_cls=has_cls))


def temporal_centre(visual: Tensor) -> Tensor:
    """Subtract each video's mean over its frames: ``[..., T, D] -> [..., T, D]``, zero mean over T.

    What is constant over the clip (background, colour, static objects) goes; differences between
    frames are unchanged. The cost: the absolute appearance is gone too.
    """
    return visual - visual.mean(dim=-2, keepdim=True)  # [..., T, D] - [..., 1, D]


def pool_text(text_states: Tensor, pooling: str = "last", *, label_positions: Sequence[int] | None = None) -> Tensor:
    """The text vector from the tokens after the video.

    Args:
        text_states: ``[S_t, D]``, the real (unpadded) tokens after the video span.
        pooling: ``last``, ``mean`` or ``label`` (``list_text_poolings()``).
        label_positions: indices into ``[S_t]`` of the class-name tokens (``label_token_positions``);
            needed by ``label``.

    Returns:
        ``[D]``.

    Raises:
        ValueError: unknown pooling, no tokens, or ``label`` without label positions.
    """
    pool = TEXT_POOLINGS.get(pooling)
    if text_states.shape[0] == 0:
        raise InputError("no text tokens after the video span: the prompt must continue after the video")
    positions = None if label_positions is None else tuple(int(p) for p in label_positions)
    return pool(text_states, TextPoolingContext(label_positions=positions))


@dataclass(frozen=True)
class VideoFeatures:
    """The pooled MLLM features of one video and the recipe that made them.

    How the features were made (model, layers, poolings, sampling, temporal centring, widths) is the
    ``recipe``, the same ``FeatureRecipe`` the extractor and the cache hold; the record adds what is
    particular to this video.

    Attributes:
        video_id: the caller's id of the video.
        visual: ``[T, D_v]`` per-frame visual features (prompt-independent: the video precedes every
            prompt's own words); D_v = ``recipe.visual_dim``.
        text: role (``query``, ``support``) → ``[D_in]`` text feature under that role's prompt; the
            roles this video has (``support`` only for a video with a label).
        prompt_ids: role → fsar-prompts id of the prompt that produced ``text[role]``.
        recipe: how the features were made.
        frame_indices: source frame index of each of the T frames.
        label: the class label (support-eligible videos), or None.
        n_source_frames: frames in the source video.

    Raises:
        TypeError: ``recipe`` is not a ``FeatureRecipe``.
        ValueError: ``text`` and ``prompt_ids`` name different roles, or a role the recipe does not run.
    """

    video_id: str
    visual: Tensor
    text: dict[str, Tensor]
    prompt_ids: dict[str, str]
    recipe: FeatureRecipe
    frame_indices: tuple[int, ...]
    label: str | None = None
    n_source_frames: int = field(default=0)

    def __post_init__(self) -> None:
        if not isinstance(self.recipe, FeatureRecipe):
            raise TypeError(f"VideoFeatures.recipe must be a FeatureRecipe, got {type(self.recipe).__name__}")
        if set(self.text) != set(self.prompt_ids):
            raise InputError(
                f"video {self.video_id!r} has text features for roles {sorted(self.text)} and prompt ids for "
                f"{sorted(self.prompt_ids)}; they must name the same roles"
            )
        unknown = sorted(set(self.text) - set(self.recipe.roles))
        if unknown:
            raise InputError(
                f"video {self.video_id!r} has text features for roles {unknown} that its recipe does not run "
                f"(roles: {', '.join(self.recipe.roles)})"
            )

    @property
    def visual_dim(self) -> int:
        """D_v, the width of ``visual`` (may differ from the text width D_in)."""
        return int(self.visual.shape[-1])

    @property
    def text_poolings(self) -> dict[str, str]:
        """Role → the text pooling of ``text[role]`` (from the recipe), for the roles this video has."""
        return {role: self.recipe.text_pooling_for(role) for role in self.text}
