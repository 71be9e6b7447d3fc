"""fsar-features: from video files to cached multimodal-LLM features for few-shot action recognition.

Read T frames with PyAV (``read_frames``), run a frozen video MLLM (``create_backend``: Video-LLaVA,
LLaVA-NeXT-Video, and tiny seeded versions of both for offline work), decode its hidden states into a
visual stream ``[T, D_v]`` (D_v = D_in, or g²·D_in with grid pooling) and a text stream ``[D_in]`` per
prompt (``FeatureExtractor``), and fill a resumable, shardable on-disk cache (``extract_features``,
``FeatureCache``).

A checkpoint's backend comes from its ``config.json`` (``backend_for_model``), never from its name;
``save_tiny_checkpoint`` writes tiny random checkpoints with the real -hf models' token geometry.

Hidden-state index convention: 0 = embeddings, ℓ = decoder layer ℓ, -1 = L = the last layer (after
the final norm).

Example:
    >>> import fsar_features
    >>> fsar_features.list_backends()
    ['llava-next-video', 'tiny-llava-next-video', 'tiny-video-llava', 'video-llava']
    >>> fsar_features.sample_indices(100, 8, "uniform")
    [0, 14, 28, 42, 57, 71, 85, 99]
"""

from fsar_features import backends as _backends  # registers the backends
from fsar_features._atomic import (
    WriteError,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    describe_os_error,
)
from fsar_features._cache import (
    STALE_AFTER_S,
    STORAGE_DTYPES,
    CacheEntry,
    CacheFailure,
    CacheProblem,
    FeatureCache,
)
from fsar_features._decode import (
    LayerSpec,
    TextPoolingContext,
    VideoFeatures,
    VisualPoolingContext,
    find_video_span,
    list_layer_presets,
    list_text_poolings,
    list_visual_poolings,
    patch_grid_side,
    pool_text,
    pool_visual,
    register_layer_preset,
    register_text_pooling,
    register_visual_pooling,
    resolve_layers,
    select_layers,
    temporal_centre,
    text_pooling_needs_label,
)
from fsar_features._extract import (
    ExtractionConfig,
    ExtractionSummary,
    FeatureExtractor,
    VideoItem,
    extract_features,
    resolve_shard,
    shard_of,
)
from fsar_features._label_span import label_char_spans, label_token_positions
from fsar_features._model_types import backend_for_model, list_model_types, register_model_type
from fsar_features._recipe import FeatureRecipe, visual_width
from fsar_features._registry import BackendOutput, FeatureBackend, create_backend, list_backends, register_backend
from fsar_features._sampling import list_samplers, register_sampler, sample_indices
from fsar_features._spatial import resize_and_center_crop
from fsar_features._video import VideoClip, VideoReadError, read_frames
from fsar_features.backends._tiny_checkpoints import save_tiny_checkpoint

del _backends

__version__ = "0.1.0"

__all__ = [
    "STALE_AFTER_S",
    "STORAGE_DTYPES",
    "BackendOutput",
    "CacheEntry",
    "CacheFailure",
    "CacheProblem",
    "ExtractionConfig",
    "ExtractionSummary",
    "FeatureBackend",
    "FeatureCache",
    "FeatureExtractor",
    "FeatureRecipe",
    "LayerSpec",
    "TextPoolingContext",
    "VideoClip",
    "VideoFeatures",
    "VideoItem",
    "VideoReadError",
    "VisualPoolingContext",
    "WriteError",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "backend_for_model",
    "create_backend",
    "describe_os_error",
    "extract_features",
    "find_video_span",
    "label_char_spans",
    "label_token_positions",
    "list_backends",
    "list_layer_presets",
    "list_model_types",
    "list_samplers",
    "list_text_poolings",
    "list_visual_poolings",
    "patch_grid_side",
    "pool_text",
    "pool_visual",
    "read_frames",
    "register_backend",
    "register_layer_preset",
    "register_model_type",
    "register_sampler",
    "register_text_pooling",
    "register_visual_pooling",
    "resize_and_center_crop",
    "resolve_layers",
    "resolve_shard",
    "sample_indices",
    "save_tiny_checkpoint",
    "select_layers",
    "shard_of",
    "temporal_centre",
    "text_pooling_needs_label",
    "visual_width",
]
