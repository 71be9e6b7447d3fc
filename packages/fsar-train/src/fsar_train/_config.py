"""Experiment configuration: frozen dataclasses, TOML presets, strict dotted overrides.

One ``ExperimentConfig`` composes a config per component. Named presets are TOML files in
``fsar_train/presets/`` (one per benchmark, one for synthetic-actions), found by scanning the
folder; a preset only lists what differs from the defaults. Overrides such as ``train.lr=3e-4``
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

__all__ = [
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
    "config_from_dict",
    "config_to_dict",
    "config_to_toml",
    "list_presets",
    "load_config",
    "load_preset",
]


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
    # Published (train, val, test) class and video counts (PROTOCOL.md §1); empty = unknown.
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


@dataclass(frozen=True)
class FeatureConfig:
    """Which feature source the trainer reads (a name in fsar_train.list_feature_sources())."""

    # "mllm": a frozen MLLM's features through the fsar-features cache (extracted on first use);
    # "pixels": downsampled RGB frames decoded with PyAV (a model-free stand-in).
    source: str = "pixels"
    n_frames: int = 8  # T: frames sampled per video (segment centres, deterministic)
    grid: int = 16  # pixels source: frames are area-resized to grid x grid (D = 3 * grid^2)
    subtract_mean: bool = True  # pixels source: subtract the video's mean frame (a static background cancels)
    cache_dir: str = ""  # where features are cached; default <data.root>/features (mllm: <data.root>/mllm-<backend>)
    # mllm source: a registered fsar-features backend, and the model (hub id or local folder) for real ones.
    backend: str = "tiny-video-llava"
    model: str = ""
    layers: int = -1  # decoder hidden-state index (0 = embeddings, -1 = last)
    batch_size: int = 8  # videos per MLLM forward
    scenario: str = ""  # fsar-prompts scenario; empty = the benchmark's preset (temporal for synthetic-actions)
    # mllm source, ablations: "label_free" gives support videos the query prompt's text (no class name in
    # the prompt); random_init_seed >= 0 keeps the model's architecture and tokenizer but draws its weights.
    support_prompt: Literal["label", "label_free"] = "label"
    random_init_seed: int = -1
    progress: bool = True  # progress bar during extraction


@dataclass(frozen=True)
class EpisodeConfig:
    """Episode sizes (PROTOCOL.md §4, METHOD.md §4.7)."""

    n_way: int = 5
    n_shot: int = 1  # the same K in training and test unless a result says otherwise
    train_queries: int = 5  # queries per class in training episodes (TRX default)
    test_queries: int = 1  # queries per class in val and test episodes (the protocol)


@dataclass(frozen=True)
class MetricConfig:
    """The metric to train: a registered fsar-metric name and its constructor arguments."""

    name: str = "trx"
    # Constructor keyword arguments; `dim` / `in_dim` default to the feature width when the metric takes them.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    """Episodic training (METHOD.md §4.7)."""

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
    checkpoint_every: int = 100  # write last.pt every N steps (and after the last step)
    seed: int = 0  # model initialisation, training episodes, dropout
    # Weight of each named loss term from fsar_metric.episode_losses; unlisted terms weigh 1.0, 0 skips.
    loss_weights: dict[str, float] = field(default_factory=dict)
    device: str = "auto"  # auto: cuda when available, else cpu
    autocast: Literal["off", "bf16"] = "off"  # bf16 autocast on GPU
    log_every: int = 10


@dataclass(frozen=True)
class EvalConfig:
    """Test protocol (PROTOCOL.md §4)."""

    episodes: int = 10_000
    seed: int = 0
    shots: tuple[int, ...] = (1, 5)  # accuracy-vs-shots curve; the trained K is always evaluated
    baselines: tuple[str, ...] = ("proto", "otam", "bimhm")  # parameter-free metrics on the same episodes
    checkpoint: Literal["best", "last"] = "best"
    confusion_plot_max_classes: int = 40


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
            raise ValueError(f"config key {key!r} must be one of {', '.join(map(repr, args))}; got {value!r}")
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
    return ValueError(f"unknown config key {key!r}{hint}; {parent} has: {', '.join(known)}")


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
                raise ValueError(f"config key {full!r} is a section; give a table, got {value!r}")
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


# ----------------------------------------------------------------------------- presets, overrides
def _preset_files() -> dict[str, Any]:
    folder = resources.files("fsar_train") / "presets"
    return {p.name.removesuffix(".toml"): p for p in folder.iterdir() if p.name.endswith(".toml")}


def list_presets() -> list[str]:
    """Names of the shipped presets (TOML files in ``fsar_train/presets/``), sorted.

    Example:
        >>> list_presets()  # doctest: +NORMALIZE_WHITESPACE
        ['hmdb51', 'kinetics100', 'ssv2-full', 'ssv2-small', 'synthetic-actions', 'synthetic-actions-llava',
         'synthetic-actions-llava-random', 'ucf101']
    """
    return sorted(_preset_files())


def load_config(path: str | Path) -> ExperimentConfig:
    """A config from a TOML file (a preset-like file, or a run's ``config.toml``)."""
    path = Path(path)
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    try:
        return config_from_dict(data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def load_preset(name: str, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """A shipped preset with dotted overrides applied.

    Raises:
        ValueError: unknown preset (the message lists them), or a bad override.

    Example:
        >>> cfg = load_preset("synthetic-actions", ["train.lr=3e-4", "episodes.n_shot=5"])
        >>> cfg.train.lr, cfg.episodes.n_shot
        (0.0003, 5)
    """
    files = _preset_files()
    if name not in files:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(sorted(files))}")
    data = tomllib.loads(files[name].read_text(encoding="utf-8"))
    try:
        config = config_from_dict(data)
    except ValueError as err:
        raise ValueError(f"preset {name!r}: {err}") from None
    return apply_overrides(config, overrides)


def _parse_value(text: str) -> Any:
    """A TOML value (``3e-4``, ``true``, ``[1, 5]``, ``"x"``); anything else is a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(config: ExperimentConfig, overrides: list[str] | tuple[str, ...]) -> ExperimentConfig:
    """Apply ``section.key=value`` overrides; ``metric.options.<arg>`` and ``train.loss_weights.<term>`` add entries.

    Raises:
        ValueError: no ``=``, an unknown key, or a value whose type differs from the field's.

    Example:
        >>> apply_overrides(ExperimentConfig(), ["train.lrr=1"])
        Traceback (most recent call last):
        ...
        ValueError: unknown config key 'train.lrr' (did you mean 'lr'?); train has: steps, ...
    """
    for item in overrides:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"override {item!r} must look like section.key=value")
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
                    raise ValueError(f"config key {key!r} is a section; set one of its keys")
                node, cls = getattr(node, part), annotation
                continue
            prefix = ".".join(parts[:depth])
            if typing.get_origin(annotation) is dict and depth < len(parts) - 1:
                entry = ".".join(parts[depth + 1 :])
                current = dict(getattr(node, part))
                current[entry] = value
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


def config_diff(a: ExperimentConfig, b: ExperimentConfig, *, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ, as ``key: a -> b`` lines (sections in ``ignore`` skipped)."""

    def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in data.items():
            if isinstance(v, dict) and not (prefix and k in ("options", "loss_weights")):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    fa, fb = flat(config_to_dict(a)), flat(config_to_dict(b))
    keys = [k for k in dict.fromkeys([*fa, *fb]) if k.split(".")[0] not in ignore]
    return [f"{k}: {fa.get(k)!r} -> {fb.get(k)!r}" for k in keys if fa.get(k) != fb.get(k)]
