"""fsar-metric: few-shot action recognition metrics behind one tensor contract.

Every metric maps way-major support ``[N, K, T, D]`` and queries ``[Q, T, D]`` to logits ``[Q, N]``
(larger = more similar); multimodal metrics also take ``support_text`` / ``query_text`` keywords. What a metric reads or
provides beyond that is declared on its registry entry (``metric_capabilities``); ``Registry`` is the
one name → object registry every fsar registry is built on.

Example:
    >>> import torch
    >>> import fsar_metric
    >>> fsar_metric.list_metrics()
    ['bimhm', 'fsar_llava', 'mpmm', 'otam', 'proto', 'trx']
    >>> support, query = torch.randn(5, 1, 8, 64), torch.randn(5, 8, 64)
    >>> fsar_metric.create_metric("otam")(support, query).argmax(-1).shape
    torch.Size([5])
"""

from fsar_metric._episode import to_flat, to_way_major
from fsar_metric._multimodal import Episode, episode_losses, score_episode
from fsar_metric._registry import (
    METRICS,
    Metric,
    MetricCapabilities,
    MetricSpec,
    OwnsLosses,
    PoolsPerVideo,
    create_metric,
    get_metric_class,
    list_metrics,
    metric_capabilities,
    metric_spec,
    register_metric,
)
from fsar_metric.head import (
    CTPCConfig,
    EncodedPool,
    EncodedVideos,
    FSARLLaVA,
    FSARLLaVAConfig,
    LossConfig,
    MFEMConfig,
    MPMMConfig,
    MPMMOutput,
    ablation,
    fuse_cues,
    list_ablations,
    mpmm_match,
)
from fsar_metric.head.mpmm import build_temporal
from fsar_metric.metrics import (
    OTAM,
    TRX,
    BiMHM,
    ProtoNet,
    bimhm_distance,
    otam_cumulative_distance,
    otam_distance,
)
from fsar_metric.registry import DuplicateNameError, Entry, Registry, UnknownNameError
from fsar_metric.similarity import (
    CosineSimilarity,
    DotProductSimilarity,
    NegativeSquaredEuclidean,
    create_similarity,
    list_similarities,
    register_similarity,
)

__version__ = "0.1.0"

__all__ = [
    "METRICS",
    "OTAM",
    "TRX",
    "BiMHM",
    "CTPCConfig",
    "CosineSimilarity",
    "DotProductSimilarity",
    "DuplicateNameError",
    "EncodedPool",
    "EncodedVideos",
    "Entry",
    "Episode",
    "FSARLLaVA",
    "FSARLLaVAConfig",
    "LossConfig",
    "MFEMConfig",
    "MPMMConfig",
    "MPMMOutput",
    "Metric",
    "MetricCapabilities",
    "MetricSpec",
    "NegativeSquaredEuclidean",
    "OwnsLosses",
    "PoolsPerVideo",
    "ProtoNet",
    "Registry",
    "UnknownNameError",
    "ablation",
    "bimhm_distance",
    "build_temporal",
    "create_metric",
    "create_similarity",
    "episode_losses",
    "fuse_cues",
    "get_metric_class",
    "list_ablations",
    "list_metrics",
    "list_similarities",
    "metric_capabilities",
    "metric_spec",
    "mpmm_match",
    "otam_cumulative_distance",
    "otam_distance",
    "register_metric",
    "register_similarity",
    "score_episode",
    "to_flat",
    "to_way_major",
]
