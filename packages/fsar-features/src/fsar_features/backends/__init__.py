"""Feature backends: the transformers LLaVA-family video MLLMs, one spec per family (``_families``).

Importing this package registers, per family in ``FAMILIES``, the backends ``<family>`` and
``tiny-<family>`` and the family's ``config.json`` ``model_type``.

Public API for code that builds or trains these models itself (fsar-train's MLLM pretraining):
``VideoFamily`` / ``FAMILIES`` / ``get_family`` (the specs), ``TinyShape`` and ``tiny_config`` /
``tiny_backend`` (tiny seeded models), ``open_backend`` (a checkpoint, weights loaded lazily),
``HFVideoBackend`` and ``Preprocessing`` (the backend class and its pixel settings), ``CLIP_MEAN`` /
``CLIP_STD`` (the CLIP normalisation), ``seeded_init`` (build a module from a seed without touching
the global RNG), ``build_tiny_tokenizer`` / ``build_word_tokenizer`` (tokenizers built in code).
"""

from fsar_features.backends._families import (
    FAMILIES,
    LLAVA_NEXT_VIDEO,
    VIDEO_LLAVA,
    TinyShape,
    VideoFamily,
    get_family,
    open_backend,
    tiny_backend,
    tiny_config,
)
from fsar_features.backends._hf import (
    CLIP_MEAN,
    CLIP_STD,
    HFVideoBackend,
    Preprocessing,
    build_tiny_tokenizer,
    build_word_tokenizer,
    seeded_init,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "FAMILIES",
    "LLAVA_NEXT_VIDEO",
    "VIDEO_LLAVA",
    "HFVideoBackend",
    "Preprocessing",
    "TinyShape",
    "VideoFamily",
    "build_tiny_tokenizer",
    "build_word_tokenizer",
    "get_family",
    "open_backend",
    "seeded_init",
    "tiny_backend",
    "tiny_config",
]
