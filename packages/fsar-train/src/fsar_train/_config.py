"""Experiment configuration: frozen dataclasses, TOML presets, strict dotted overrides.

One ``ExperimentConfig`` composes a config per component, and an experiment is **data × method ×
features**: a benchmark file (``fsar_train/benchmarks/<name>.toml``: split lists, class names,
expected counts; the prompt scenario follows the benchmark's name) gives the ``data`` (and
``synthetic``) tables; a preset (``fsar_train/presets/<name>.toml``: the method, its training and
evaluation) gives the rest, and names its benchmark as ``data.benchmark``; the model (``--model``)
picks the features. ``build_config`` composes the three the way both command lines do. Files are
found by scanning their folders; a file only lists what differs from the defaults. Overrides such as ``train.lr=3e-4``
are parsed as TOML values and must name an existing key and keep its type (an int may stand for a
float). The resolved config is written as ``config.toml`` into every run folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fsar_metric.errors import InputError

__all__ = [
    "COSMETIC_KEYS",
    "DataConfig",
    "EpisodeConfig",
    "EvalConfig",
    "ExperimentConfig",
    "FeatureConfig",
    "MetricConfig",
    "PretrainConfig",
    "SyntheticConfig",
    "TrainConfig",
    "apply_overrides",
    "build_config",
    "config_from_dict",
    "config_to_dict",
    "config_to_toml",
    "list_benchmarks",
    "list_presets",
    "load_benchmark",
    "load_config",
    "load_preset",
]


def _check_bounds(section: str, config: Any, bounds: dict[str, tuple[float, float | None, bool]]) -> None:
    """Refuse out-of-range numbers before any work: ``bounds[name] = (low, high, low_inclusive)``.

    Raises:
        ValueError: names the key, the allowed range and the value (``train.steps must be >= 1, got -5``).
    """
    for name, (low, high, inclusive) in bounds.items():
        value = getattr(config, name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            too_low = v < low if inclusive else v <= low
            if too_low or (high is not None and v > high):
                sign = ">=" if inclusive else ">"
                allowed = f"{sign} {low}" + (f" and <= {high}" if high is not None else "")
                raise InputError(f"{section}.{name} must be {allowed}, got {value}")


@dataclass(frozen=True)
class DataConfig:
    """Where the videos and split lists are."""

    # Benchmark name, as in fsar_prompts.list_benchmarks() where one exists ("ssv2-full", "ucf101", ...).
    benchmark: str = "synthetic-actions"
    # synthetic: generate synthetic-actions into `root`; split_files: public split lists;
    # folders: root/{train,val,test}/<class>/<video>; csv: one CSV with label, video_id or path, split.
    format: Literal["synthetic", "split_files", "folders", "csv"] = "synthetic"
    # Data root: videos are looked up under it (by file name, or at root/<path> for "//path" lines).
    root: str = "data/synthetic-actions"
    # Split lists (format = split_files), e.g. TRX's splits/ssv2_OTAM/trainlist07.txt.
    train_list: str = ""
    val_list: str = ""
    test_list: str = ""
    # Index -> class-name lists (one name per line, or a JSON array) for "<split><index>/<id>" files.
    train_names: str = ""
    val_names: str = ""
    test_names: str = ""
    # The CSV file (format = csv).
    csv: str = ""
    # File-name matching: basename (lower-case, spaces -> "_") or youtube_id (first 11 characters, Kinetics).
    key: Literal["basename", "youtube_id"] = "basename"
    # Fail when listed videos are missing; by default go on without them and warn with counts.
    strict: bool = False
    # Published (train, val, test) class and video counts (docs/train.md §2); empty = unknown.
    expected_classes: tuple[int, ...] = ()
    expected_videos: tuple[int, ...] = ()


@dataclass(frozen=True)
class SyntheticConfig:
    """The synthetic-actions dataset (used when data.format = synthetic)."""

    videos_per_class: int = 30
    n_frames: int = 24  # frames per clip
    size: int = 64  # frame width and height in pixels (even, for yuv420p)
    fps: int = 12
    seed: int = 0
    workers: int = 0  # processes; 0 = one per CPU core

    def __post_init__(self) -> None:
        _check_bounds(
            "synthetic",
            self,
            {"videos_per_class": (1, None, True), "n_frames": (1, None, True), "size": (8, None, True),
             "fps": (1, None, True), "workers": (0, None, True)},
        )  # fmt: skip
        if self.size % 2:
            raise InputError(f"synthetic.size must be even (yuv420p), got {self.size}")


@dataclass(frozen=True)
class FeatureConfig:
    """Which feature source the trainer reads (a name in fsar_train.list_feature_sources())."""

    # "mllm": a frozen MLLM's features through the fsar-features cache (extracted on first use);
    # "pixels": downsampled RGB frames decoded with PyAV (a model-free stand-in).
    source: str = "mllm"
    n_frames: int = 8  # T: frames sampled per video (segment centres, deterministic)
    grid: int = 16  # pixels source: frames are area-resized to grid x grid (D = 3 * grid^2)
    subtract_mean: bool = True  # pixels source: subtract the video's mean frame (a static background cancels)
    cache_dir: str = ""  # where features are cached; default <data.root>/features (mllm: <data.root>/mllm-<backend>)
    # mllm source: the model (a checkpoint folder, a hub id in the local Hugging Face cache, or
    # builtin:<name> for a model shipped with fsar-train) and its fsar-features backend: "auto" reads
    # the checkpoint's config.json (model_type) and never guesses from the name; or a registered name.
    backend: str = "auto"
    model: str = "LanguageBind/Video-LLaVA-7B-hf"
    layers: int = -1  # decoder hidden-state index (0 = embeddings, -1 = last)
    # mllm source, decoding (docs/features.md, "Decoding options"); all recorded in the cache recipe.
    visual_pooling: str = "mean"  # per frame: "mean" of the frame's tokens, "cls", or "grid<g>" (g x g patch grid)
    temporal_centring: bool = False  # store each video's frames minus their mean over T (keeps only change)
    support_text_pooling: str = "last"  # support (label-aware) text: "last" token, "mean", or "label" (name tokens)
    query_text_pooling: str = "last"  # query (label-free) text: "last" token or "mean" of the prompt tokens
    batch_size: int = 8  # videos per MLLM forward
    scenario: str = ""  # fsar-prompts scenario; empty = the benchmark's preset (temporal for synthetic-actions)
    # mllm source, ablations: "label_free" gives support videos the query prompt's text (no class name in
    # the prompt); random_init_seed >= 0 keeps the model's architecture and tokenizer but draws its weights.
    support_prompt: Literal["label", "label_free"] = "label"
    random_init_seed: int = -1
    progress: bool = True  # progress bar during extraction

    def __post_init__(self) -> None:
        _check_bounds(
            "features", self, {"n_frames": (1, None, True), "grid": (1, None, True), "batch_size": (1, None, True)}
        )


@dataclass(frozen=True)
class EpisodeConfig:
    """Episode sizes (docs/protocol.md, "Task" and "Episodes")."""

    n_way: int = 5
    n_shot: int = 1  # the same K in training and test unless a result says otherwise
    train_queries: int = 5  # queries per class in training episodes (TRX default)
    test_queries: int = 1  # queries per class in val and test episodes (the protocol)

    def __post_init__(self) -> None:
        _check_bounds(
            "episodes",
            self,
            {"n_way": (2, None, True), "n_shot": (1, None, True), "train_queries": (1, None, True),
             "test_queries": (1, None, True)},
        )  # fmt: skip


@dataclass(frozen=True)
class MetricConfig:
    """The metric to train: a registered fsar-metric name and its constructor arguments."""

    name: str = "fsar_llava"
    # Constructor keyword arguments. Widths left out follow the feature width D_in (fsar_train.default_sizes):
    # fsar_llava in_dim = D_in, dim = min(D_in, 1024); trx dim = D_in, key_dim = min(D_in, 1152).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    """Episodic training (docs/train.md §5)."""

    steps: int = 1000  # optimiser steps
    episodes_per_step: int = 16  # B: gradient accumulation over B episodes per step (TRX, STRM, TEAM)
    lr: float = 1e-4  # AdamW peak learning rate
    weight_decay: float = 0.01
    warmup_steps: int = 50  # linear warm-up from lr / warmup_steps, then cosine decay
    final_lr_ratio: float = 0.01  # the cosine ends at lr * final_lr_ratio
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    val_every: int = 100  # validate on meta-val every N steps (and after the last step)
    val_episodes: int = 1000  # fixed, seeded val episode list (the shared library uses 1,000)
    val_seed: int = 1
    # Meta-train classes moved to validation (seeded by val_seed; the head never trains on them) when meta-val
    # has too few classes for varied episodes (synthetic-actions: 5, i.e. one 5-way task). 0 = meta-val only.
    val_train_classes: int = 0
    checkpoint_every: int = 100  # write last.pt every N steps (and after the last step)
    seed: int = 0  # model initialisation, training episodes, dropout
    # Weight of each named loss term from fsar_metric.episode_losses; unlisted terms weigh 1.0, 0 skips.
    loss_weights: dict[str, float] = field(default_factory=dict)
    device: str = "auto"  # auto: cuda when available, else cpu
    autocast: Literal["off", "bf16"] = "off"  # bf16 autocast on GPU
    log_every: int = 10
    per_shot: bool = False  # also train a model per other evaluated shot K (in shot<K>/); else one at episodes.n_shot

    def __post_init__(self) -> None:
        _check_bounds(
            "train",
            self,
            {"steps": (1, None, True), "episodes_per_step": (1, None, True), "lr": (0, None, False),
             "weight_decay": (0, None, True), "warmup_steps": (0, None, True), "final_lr_ratio": (0, 1, True),
             "grad_clip": (0, None, True), "val_every": (1, None, True), "val_episodes": (1, None, True),
             "val_train_classes": (0, None, True), "checkpoint_every": (1, None, True), "log_every": (1, None, True)},
        )  # fmt: skip


@dataclass(frozen=True)
class EvalConfig:
    """Test protocol (docs/protocol.md, "Episodes" and "Confidence interval")."""

    episodes: int = 10_000
    seed: int = 0
    shots: tuple[int, ...] = (1, 5)  # accuracy-vs-shots curve; the trained K is always evaluated
    baselines: tuple[str, ...] = ("proto", "otam", "bimhm")  # parameter-free metrics on the same episodes
    # Metrics trained like the method (same features, steps and schedule; widths from the feature width),
    # each in <run>/baselines/<name>/, then evaluated on the same episodes.
    trained_baselines: tuple[str, ...] = ("trx",)
    # Test-time ablations of a trained fsar_llava head (fsar_metric.list_ablations()): the same weights with
    # one component switched, evaluated on the same episodes (no retraining).
    head_ablations: tuple[str, ...] = ("visual_only", "text_only", "with_cross")
    checkpoint: Literal["best", "last"] = "best"
    confusion_plot_max_classes: int = 40

    def __post_init__(self) -> None:
        _check_bounds(
            "eval",
            self,
            {"episodes": (1, None, True), "shots": (1, None, True), "confusion_plot_max_classes": (1, None, True)},
        )


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining a tiny Video-LLaVA on meta-train captions (`fsar-train pretrain`, fsar_train._pretrain)."""

    tasks: tuple[str, ...] = ("query-label", "support-caption")  # fsar_train.list_pretrain_tasks()
    hidden_size: int = 64  # decoder width
    n_layers: int = 2  # decoder layers
    vision_hidden_size: int = 64  # CLIP tower width
    vision_layers: int = 2
    vision_feature_layer: int = -2  # tower hidden state the projector reads (Video-LLaVA: penultimate)
    image_size: int = 32
    patch_size: int = 8
    n_frames: int = 8
    steps: int = 4000
    batch_size: int = 32
    lr: float = 1e-3  # AdamW peak; linear warm-up, cosine decay to 10 %
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    val_fraction: float = 0.1  # meta-train videos held out of the gradient steps for validation
    mirror: bool = True  # left-right mirror half the videos (left/right, (counter)clockwise swapped) where the
    # mirrored class is a meta-train class too
    eval_every: int = 500
    seed: int = 0


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything a run needs; saved as config.toml in the run folder."""

    name: str = "synthetic-actions"
    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    episodes: EpisodeConfig = field(default_factory=EpisodeConfig)
    metric: MetricConfig = field(default_factory=MetricConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


# ----------------------------------------------------------------------------- typed conversion
def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """``value`` checked against ``annotation``; raises ValueError naming ``key``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    fail = ValueError(f"config key {key!r} expects {_type_name(annotation)}, got {value!r} ({type(value).__name__})")
    if annotation is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise InputError(f"config key {key!r} must be one of {', '.join(map(repr, args))}; got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise fail
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise fail
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise fail
        return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise fail
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _coerce(value, option, key)
            except ValueError:
                continue
        raise fail
    raise TypeError(f"unsupported config annotation {annotation!r} for {key!r}")


def _unknown(key: str, known: list[str]) -> ValueError:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    parent = key.rsplit(".", 1)[0] if "." in key else "the config"
    return InputError(f"unknown config key {key!r}{hint}; {parent} has: {', '.join(known)}")


def _build(cls: type, data: dict[str, Any], prefix: str, base: Any) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    updates: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise _unknown(full, names)
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise InputError(f"config key {full!r} is a section; give a table, got {value!r}")
            updates[key] = _build(annotation, value, f"{full}.", getattr(base, key))
        elif typing.get_origin(annotation) is dict:
            # A preset's table replaces the default dict wholesale.
            updates[key] = _coerce(value, annotation, full)
        else:
            updates[key] = _coerce(value, annotation, full)
    return dataclasses.replace(base, **updates)


def config_from_dict(data: dict[str, Any], base: ExperimentConfig | None = None) -> ExperimentConfig:
    """Build a config from nested dicts (a parsed TOML file) on top of ``base`` (default: the defaults).

    Raises:
        ValueError: an unknown key (with a close match and the known keys) or a value of the wrong type.
    """
    return _build(ExperimentConfig, data, "", base if base is not None else ExperimentConfig())


def config_to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dicts (tuples become lists), in field order."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = config_to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        elif isinstance(value, dict):
            out[f.name] = dict(value)
        else:
            out[f.name] = value
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table: metric.options.losses = {"base_class_ce" = 1.0}
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} to TOML")


def config_to_toml(config: ExperimentConfig) -> str:
    """The config as TOML that ``load_config`` reads back to an equal config."""
    data = config_to_dict(config)
    lines = [f"name = {_toml_value(data.pop('name'))}"]
    for section, table in data.items():
        lines.append(f"\n[{section}]")
        nested = []
        for key, value in table.items():
            if isinstance(value, dict):
                nested.append((key, value))
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, value in nested:
            lines.append(f"\n[{section}.{key}]")
            lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- benchmarks, presets
def _toml_files(folder: str) -> dict[str, Any]:
    root = resources.files("fsar_train") / folder
    return {p.name.removesuffix(".toml"): p for p in root.iterdir() if p.name.endswith(".toml")}


def list_benchmarks() -> list[str]:
    """Names of the benchmark files shipped in ``fsar_train/benchmarks/`` (the data of an experiment), sorted.

    Example:
        >>> list_benchmarks()
        ['hmdb51', 'kinetics100', 'ssv2-full', 'ssv2-small', 'synthetic-actions', 'ucf101']
    """
    return sorted(_toml_files("benchmarks"))


def _benchmark_tables(name: str) -> dict[str, Any]:
    files = _toml_files("benchmarks")
    if name not in files:
        raise InputError(f"unknown benchmark {name!r}; valid: {', '.join(sorted(files))}")
    return tomllib.loads(files[name].read_text(encoding="utf-8"))


def load_benchmark(name: str, base: ExperimentConfig | None = None) -> ExperimentConfig:
    """``base`` (default: the defaults) with the ``data`` (and ``synthetic``) tables of a benchmark file.

    The data section is replaced whole, so nothing of another benchmark's data survives.

    Raises:
        ValueError: unknown benchmark (the message lists them).

    Example:
        >>> load_benchmark("kinetics100").data.key
        'youtube_id'
    """
    tables = _benchmark_tables(name)
    base = base if base is not None else ExperimentConfig()
    base = dataclasses.replace(base, data=DataConfig(), synthetic=SyntheticConfig())
    try:
        return config_from_dict(tables, base)
    except ValueError as err:
        raise InputError(f"benchmark {name!r}: {err}") from None


def list_presets() -> list[str]:
    """Names of the shipped presets (TOML files in ``fsar_train/presets/``), sorted.

    Example:
        >>> list_presets()
        ['fsar-llava', 'synthetic-actions', 'synthetic-actions-llava', 'synthetic-actions-llava-random']
    """
    return sorted(_toml_files("presets"))


def load_config(path: str | Path) -> ExperimentConfig:
    """A config from a TOML file (a preset-like file, or a run's ``config.toml``)."""
    path = Path(path)
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    try:
        return config_from_dict(data)
    except ValueError as err:
        raise InputError(f"{path}: {err}") from None


def load_preset(name: str, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """A shipped preset with dotted overrides applied.

    A preset that names ``data.benchmark`` starts from that benchmark file's data; the preset's own
    ``data`` keys then apply on top.

    Raises:
        ValueError: unknown preset (the message lists them), or a bad override.

    Example:
        >>> cfg = load_preset("synthetic-actions", ["train.lr=3e-4", "episodes.n_shot=5"])
        >>> cfg.train.lr, cfg.episodes.n_shot, cfg.data.expected_classes
        (0.0003, 5, (29, 5, 10))
    """
    files = _toml_files("presets")
    if name not in files:
        raise InputError(f"unknown preset {name!r}; presets: {', '.join(sorted(files))}")
    data = tomllib.loads(files[name].read_text(encoding="utf-8"))
    try:
        benchmark = data.get("data", {}).get("benchmark")
        base = load_benchmark(benchmark) if benchmark in list_benchmarks() else None
        config = config_from_dict(data, base)
    except ValueError as err:
        raise InputError(f"preset {name!r}: {err}") from None
    return apply_overrides(config, overrides)


#: The preset of ``build_config`` when none is named: the embedded default without a benchmark (or with
#: synthetic-actions), the FSAR-LLaVA method for any other benchmark.
DEFAULT_PRESET = "synthetic-actions-llava"
METHOD_PRESET = "fsar-llava"


def build_config(
    preset: str | None = None,
    *,
    benchmark: str | None = None,
    data_root: str | Path | None = None,
    split_dir: str | Path | None = None,
    model: str | None = None,
    backend: str | None = None,
    device: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> ExperimentConfig:
    """The experiment of a command line: data × method × features, then ``section.key=value`` overrides.

    Args:
        preset: the method preset; default ``synthetic-actions-llava`` without a benchmark (or with
            ``synthetic-actions``), else ``fsar-llava``.
        benchmark: the data (``list_benchmarks()``): split lists, class names, expected counts, prompt scenario.
        data_root: where the videos are.
        split_dir: a folder with the public split lists, in TRX's (``trainlist03.txt`` …) or CLIP-FSAR's
            (``train_few_shot.txt`` …) layout, detected from the files present.
        model: the MLLM (checkpoint folder or hub id); the features become its ``mllm`` features.
        backend: an fsar-features backend name; default ``auto``: from the checkpoint's config.json.
        device: the device of every stage (extraction, training, evaluation): ``auto``, ``cpu``, ``cuda:1`` …
        overrides: dotted overrides, applied last.

    Raises:
        ValueError: an unknown preset or benchmark, a split folder without the lists, a bad override.

    Example:
        >>> cfg = build_config(benchmark="hmdb51", model="/ckpt/Video-LLaVA-7B-hf")
        >>> cfg.metric.name, cfg.features.model, cfg.features.backend, cfg.data.benchmark
        ('fsar_llava', '/ckpt/Video-LLaVA-7B-hf', 'auto', 'hmdb51')
    """
    if benchmark is not None and benchmark not in list_benchmarks():
        raise InputError(f"unknown benchmark {benchmark!r}; valid: {', '.join(list_benchmarks())}")
    if preset is None:
        preset = DEFAULT_PRESET if benchmark in (None, "synthetic-actions") else METHOD_PRESET
    config = load_preset(preset)
    if benchmark is not None and benchmark != config.data.benchmark:
        config = dataclasses.replace(load_benchmark(benchmark, config), name=f"{benchmark}-{config.name}")
    changes: list[str] = []
    if data_root is not None:
        changes.append(f"data.root={json.dumps(str(data_root))}")
    if split_dir is not None:
        from fsar_train._splits import find_split_files

        files = find_split_files(split_dir, config.data.benchmark)
        changes += ["data.format='split_files'"]
        changes += [f"data.{s}_list={json.dumps(str(getattr(files, s)))}" for s in ("train", "val", "test")]
    if model is not None:
        changes += ["features.source='mllm'", f"features.model={json.dumps(model)}"]
        changes.append(f"features.backend={json.dumps(backend or 'auto')}")
    elif backend is not None:
        changes.append(f"features.backend={json.dumps(backend)}")
    if device is not None:
        changes.append(f"train.device={json.dumps(device)}")
    return apply_overrides(config, [*changes, *overrides])


def _parse_value(text: str) -> Any:
    """A TOML value (``3e-4``, ``true``, ``[1, 5]``, ``"x"``); anything else is a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(config: ExperimentConfig, overrides: list[str] | tuple[str, ...]) -> ExperimentConfig:
    """Apply ``section.key=value`` overrides; ``metric.options.<arg>`` and ``train.loss_weights.<term>`` add entries
    (``metric.options.<table>.<arg>`` one inside a table, e.g. ``metric.options.losses.base_class_ce=1.0``).

    Raises:
        ValueError: no ``=``, an unknown key, or a value whose type differs from the field's.

    Example:
        >>> apply_overrides(ExperimentConfig(), ["train.lrr=1"])
        Traceback (most recent call last):
        ...
        fsar_metric.errors.InputError: unknown config key 'train.lrr' (did you mean 'lr'?); train has: steps, ...
    """
    for item in overrides:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise InputError(f"override {item!r} must look like section.key=value")
        parts = key.split(".")
        value = _parse_value(raw.strip())
        # Walk down to the dict or field being set, building the nested update.
        node: Any = config
        cls: type = ExperimentConfig
        for depth, part in enumerate(parts):
            names = [f.name for f in dataclasses.fields(cls)]
            if part not in names:
                raise _unknown(".".join(parts[: depth + 1]), names)
            annotation = typing.get_type_hints(cls)[part]
            if dataclasses.is_dataclass(annotation):
                if depth == len(parts) - 1:
                    raise InputError(f"config key {key!r} is a section; set one of its keys")
                node, cls = getattr(node, part), annotation
                continue
            prefix = ".".join(parts[:depth])
            if typing.get_origin(annotation) is dict and depth < len(parts) - 1:
                # metric.options.losses.base_class_ce=1 sets options["losses"]["base_class_ce"].
                current = dict(getattr(node, part))
                inner = current
                for name in parts[depth + 1 : -1]:
                    child = inner.get(name, {})
                    if not isinstance(child, dict):
                        raise InputError(f"config key {key!r}: {name!r} holds {child!r}, not a table")
                    inner[name] = inner = dict(child)
                inner[parts[-1]] = value
                update = {part: current}
            elif depth == len(parts) - 1:
                update = {part: value}
            else:
                raise _unknown(key, [])
            nested: dict[str, Any] = update
            for name in reversed(prefix.split(".") if prefix else []):
                nested = {name: nested}
            config = config_from_dict(nested, config)
            break
    return config


#: Keys that change what a run shows, never what it computes: a run folder or its results do not
#: depend on them (``config_diff(..., ignore=COSMETIC_KEYS)``).
COSMETIC_KEYS: tuple[str, ...] = ("features.progress", "train.log_every")


def config_diff(a: ExperimentConfig, b: ExperimentConfig, *, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ, as ``key: a -> b`` lines (``ignore``: sections such as
    ``"eval"`` or dotted keys such as ``"features.progress"``, skipped)."""

    def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in data.items():
            if isinstance(v, dict) and not (prefix and k in ("options", "loss_weights")):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    fa, fb = flat(config_to_dict(a)), flat(config_to_dict(b))
    keys = [k for k in dict.fromkeys([*fa, *fb]) if k.split(".")[0] not in ignore and k not in ignore]
    return [f"{k}: {fa.get(k)!r} -> {fb.get(k)!r}" for k in keys if fa.get(k) != fb.get(k)]
