"""The backend registry and the ``FeatureBackend`` protocol (timm's ``register_model`` pattern).

A backend wraps one frozen video MLLM: it turns frames into pixel values, a rendered prompt into token
ids with the video placeholder expanded, and runs the language decoder, returning every hidden state.
Everything model-independent (which layer, which tokens, pooling, caching) lives in
``fsar_features._decode`` and ``fsar_features._extract``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from fsar_metric.errors import InputError
from fsar_metric.registry import NoDeclared, Registry
from fsar_prompts import RenderedPrompt

__all__ = ["BackendOutput", "FeatureBackend", "create_backend", "list_backends", "register_backend"]


@dataclass(frozen=True)
class BackendOutput:
    """What one decoder forward returns.

    Attributes:
        hidden_states: ``L + 1`` tensors ``[B, S, D_in]``: index 0 is the input embeddings (with the
            projected video features in place), index ℓ the output of decoder layer ℓ, index L the
            last layer after the final norm (what the LM head reads).
        cache: the key/value cache when the forward was asked to keep one, else None.
    """

    hidden_states: tuple[Tensor, ...]
    cache: Any | None


@runtime_checkable
class FeatureBackend(Protocol):
    """What every feature backend provides.

    Everything but ``pixel_values`` and ``forward`` must work without the model's weights: a backend
    may load them on first use (the checkpoint backends do), so that a run whose videos are all
    cached, which needs only the recipe, the prompt ids and the tokeniser, never loads them.
    """

    #: Registry name of the backend (``video-llava``, ``tiny-video-llava``, …).
    name: str
    #: The model as the cache recipe records it (hub id, folder, or the tiny model's recipe).
    model_id: str
    #: fsar-prompts family whose chat format wraps the prompts (``fsar_prompts.list_families()``).
    family: str
    #: Short side, in pixels, that frames are resized to before the centre crop.
    frame_size: int
    #: Side of the square crop the vision tower takes.
    crop_size: int
    #: L, decoder layers; hidden states have L + 1 entries.
    n_layers: int
    #: D_in, the decoder width.
    hidden_size: int
    #: V, video tokens per frame, read from the model config.
    tokens_per_frame: int
    #: True when each frame's first video token is the vision tower's CLS token.
    has_cls: bool
    #: The token id of the video positions in ``input_ids``.
    video_token_id: int
    #: The token id used for right padding (never read: padded positions are masked and skipped).
    pad_token_id: int
    #: Where and in what dtype the model runs (before a lazy load: what was asked for).
    device: torch.device
    dtype: torch.dtype

    def pixel_values(self, frames: np.ndarray | Tensor) -> Tensor:
        """Model input from uint8 frames.

        Args:
            frames: uint8 ``[B, T, H, W, 3]``; resized and centre-cropped here unless already
                ``[B, T, crop_size, crop_size, 3]``.

        Returns:
            ``[B, T, 3, crop_size, crop_size]`` normalised, on the backend's device and dtype.
        """
        ...

    def tokenize(self, prompt: RenderedPrompt, n_frames: int) -> list[int]:
        """Token ids of a rendered prompt with the video placeholder expanded to ``T · V`` video tokens.

        Raises:
            ValueError: the prompt's family is not the backend's, or the expansion does not give
                exactly ``T · V`` video tokens.
        """
        ...

    def tokenize_with_offsets(self, prompt: RenderedPrompt, n_frames: int) -> tuple[list[int], list[tuple[int, int]]]:
        """``tokenize`` and each token's ``(start, end)`` character span in the expanded text.

        The expanded text is ``prompt.prefix + prompt.video_placeholder × (T · V) + prompt.suffix``;
        special tokens the tokenizer adds (``<s>``) have an empty span. The ``label`` text pooling
        maps the class name's characters to tokens with these spans.

        Raises:
            ValueError: as ``tokenize``, or a tokenizer that cannot report character spans.
        """
        ...

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        pixel_values: Tensor | None = None,
        *,
        cache: Any | None = None,
        use_cache: bool = False,
    ) -> BackendOutput:
        """Run the decoder with every hidden state.

        Args:
            input_ids: ``[B, S]``.
            attention_mask: ``[B, S_past + S]``, 1 for real tokens, 0 for padding.
            pixel_values: ``[B, T, 3, H, W]`` when ``input_ids`` holds the video tokens, else None.
            cache: a key/value cache from an earlier forward whose tokens come before ``input_ids``.
            use_cache: return the key/value cache (extended by these tokens).
        """
        ...


BACKENDS: Registry[Callable[..., FeatureBackend], NoDeclared] = Registry("feature backend")

F = TypeVar("F", bound=Callable[..., FeatureBackend])


def register_backend(name: str) -> Callable[[F], F]:
    """Decorator that registers a backend factory under ``name``.

    Raises:
        ValueError: ``name`` is already registered.
    """
    return BACKENDS.register(name)


def list_backends() -> list[str]:
    """Names of the registered backends, sorted.

    Example:
        >>> list_backends()
        ['llava-next-video', 'tiny-llava-next-video', 'tiny-video-llava', 'video-llava']
    """
    return BACKENDS.names()


def create_backend(name_or_backend: str | FeatureBackend, **kwargs: Any) -> FeatureBackend:
    """Build a registered backend by name, or pass an existing backend through unchanged.

    Args:
        name_or_backend: a registered name (``list_backends()``) or a backend object.
        **kwargs: the factory's arguments, e.g. ``model=``, ``dtype=``, ``device=`` for
            ``video-llava``; ``seed=`` for the tiny backends.

    Raises:
        ValueError: unknown name (the message lists the registered ones), or keyword arguments given
            with a backend object.

    Example:
        >>> backend = create_backend("tiny-video-llava")
        >>> backend.tokens_per_frame, backend.hidden_size, backend.n_layers
        (17, 64, 2)
    """
    if not isinstance(name_or_backend, str):
        if kwargs:
            raise InputError(f"create_backend got a backend object and the keyword arguments {sorted(kwargs)}")
        return name_or_backend
    return BACKENDS.get(name_or_backend)(**kwargs)
