"""fsar-train: FSAR datasets and splits, the synthetic-actions dataset, episodic training and evaluation.

- **Splits**: ``read_split_file`` reads both public line formats; ``match_videos`` pairs entries
  with files and reports missing videos per class; presets for SSv2-Full, SSv2-Small, Kinetics-100,
  UCF101 and HMDB51 (``list_presets``).
- **synthetic-actions**: ``generate_synthetic_actions`` writes 44 compositional motion classes as
  mp4 files (no download).
- **Episodes**: ``EpisodeSampler`` (pure, seeded, validated) and ``EpisodeList`` (fixed, saved).
- **Training**: ``train`` any fsar-metric module on a ``FeatureSource`` (AdamW, warm-up + cosine,
  gradient accumulation, clipping, meta-val selection, exact resume, DDP under torchrun).
- **Evaluation**: ``evaluate_methods`` on one episode list, mean ± 1.96·σ/√N, per-class accuracy,
  confusion matrix; ``run_experiment`` does it all from a config.

Example:
    >>> import torch
    >>> from fsar_train import EpisodeSampler, TensorFeatures, build_episode
    >>> source = TensorFeatures(torch.randn(12, 8, 32), [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    >>> indices = EpisodeSampler(source.labels, n_way=3, n_shot=1, n_query=2, seed=0).episode(0)
    >>> episode = build_episode(source, indices)
    >>> episode.support.shape, episode.query.shape, episode.query_labels.tolist()
    (torch.Size([3, 1, 8, 32]), torch.Size([6, 8, 32]), [0, 0, 1, 1, 2, 2])
"""

from fsar_train import _mllm, _pixels  # noqa: F401  (register the "mllm" and "pixels" feature sources)
from fsar_train._config import (
    DataConfig,
    EpisodeConfig,
    EvalConfig,
    ExperimentConfig,
    FeatureConfig,
    MetricConfig,
    PretrainConfig,
    SyntheticConfig,
    TrainConfig,
    apply_overrides,
    build_config,
    config_from_dict,
    config_to_dict,
    config_to_toml,
    list_benchmarks,
    list_presets,
    load_benchmark,
    load_config,
    load_preset,
)
from fsar_train._datasets import load_splits
from fsar_train._episodes import EpisodeIndices, EpisodeList, EpisodeSampler, video_list_hash
from fsar_train._evaluate import MethodResult, evaluate_methods, mean_ci, results_table, run_episodes, uses_class_names
from fsar_train._experiment import (
    ExperimentResult,
    baseline_config,
    evaluate_run,
    load_sources,
    read_results,
    run_experiment,
)
from fsar_train._features import (
    ConcatFeatures,
    FeatureSource,
    SubsetFeatures,
    TensorFeatures,
    TextPrompt,
    build_episode,
    class_anchors,
    hold_out_classes,
)
from fsar_train._layout import RunLayout
from fsar_train._mllm import (
    CachedFeatures,
    backend_kwargs,
    builtin_model,
    extraction_config,
    list_builtin_models,
    mllm_cache_dir,
    resolve_backend,
)
from fsar_train._pixels import decode_frames, pixel_features, segment_centres
from fsar_train._plots import plot_accuracy_vs_shots, plot_confusion, plot_training_curves
from fsar_train._pretrain import (
    PretrainResult,
    evaluate_pretrained,
    list_pretrain_tasks,
    pretrain_table,
    pretrain_video_llava,
    read_pretrain_rows,
)
from fsar_train._sources import create_feature_source, list_feature_sources, register_feature_source
from fsar_train._splits import (
    DatasetSplit,
    MissingReport,
    MissingVideosError,
    SplitEntry,
    SplitFiles,
    SplitFilesNotFoundError,
    VideoRecord,
    find_split_files,
    list_shipped_benchmarks,
    match_videos,
    normalize_class_name,
    read_class_names,
    read_csv_split,
    read_folder_split,
    read_split_file,
    shipped_class_names,
)
from fsar_train._synthetic import (
    SyntheticClass,
    SyntheticVideo,
    generate_synthetic_actions,
    render_video,
    synthetic_classes,
    synthetic_videos,
)
from fsar_train._train import (
    TrainResult,
    build_metric,
    feature_dim,
    load_checkpoint_weights,
    lr_factor,
    prepare_run_dir,
    resolve_device,
    text_dim,
    train,
)

__version__ = "0.1.0"

__all__ = [
    "CachedFeatures",
    "ConcatFeatures",
    "DataConfig",
    "DatasetSplit",
    "EpisodeConfig",
    "EpisodeIndices",
    "EpisodeList",
    "EpisodeSampler",
    "EvalConfig",
    "ExperimentConfig",
    "ExperimentResult",
    "FeatureConfig",
    "FeatureSource",
    "MethodResult",
    "MetricConfig",
    "MissingReport",
    "MissingVideosError",
    "PretrainConfig",
    "PretrainResult",
    "RunLayout",
    "SplitEntry",
    "SplitFiles",
    "SplitFilesNotFoundError",
    "SubsetFeatures",
    "SyntheticClass",
    "SyntheticConfig",
    "SyntheticVideo",
    "TensorFeatures",
    "TextPrompt",
    "TrainConfig",
    "TrainResult",
    "VideoRecord",
    "apply_overrides",
    "backend_kwargs",
    "baseline_config",
    "build_config",
    "build_episode",
    "build_metric",
    "builtin_model",
    "class_anchors",
    "config_from_dict",
    "config_to_dict",
    "config_to_toml",
    "create_feature_source",
    "decode_frames",
    "evaluate_methods",
    "evaluate_pretrained",
    "evaluate_run",
    "extraction_config",
    "feature_dim",
    "find_split_files",
    "generate_synthetic_actions",
    "hold_out_classes",
    "list_benchmarks",
    "list_builtin_models",
    "list_feature_sources",
    "list_presets",
    "list_pretrain_tasks",
    "list_shipped_benchmarks",
    "load_benchmark",
    "load_checkpoint_weights",
    "load_config",
    "load_preset",
    "load_sources",
    "load_splits",
    "lr_factor",
    "match_videos",
    "mean_ci",
    "mllm_cache_dir",
    "normalize_class_name",
    "pixel_features",
    "plot_accuracy_vs_shots",
    "plot_confusion",
    "plot_training_curves",
    "prepare_run_dir",
    "pretrain_table",
    "pretrain_video_llava",
    "read_class_names",
    "read_csv_split",
    "read_folder_split",
    "read_pretrain_rows",
    "read_results",
    "read_split_file",
    "register_feature_source",
    "render_video",
    "resolve_backend",
    "resolve_device",
    "results_table",
    "run_episodes",
    "run_experiment",
    "segment_centres",
    "shipped_class_names",
    "synthetic_classes",
    "synthetic_videos",
    "text_dim",
    "train",
    "uses_class_names",
    "video_list_hash",
]
