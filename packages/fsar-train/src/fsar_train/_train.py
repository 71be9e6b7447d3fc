"""Episodic training of any fsar-metric module on cached features.

AdamW with a linear warm-up and cosine decay, gradient accumulation over B episodes per optimiser
step, gradient clipping, validation on a fixed, seeded meta-val episode list every N steps, the best
checkpoint chosen on meta-val only, and atomic checkpoints (model, optimizer, scheduler, RNG states,
step, history) from which a killed run resumes to the same weights and metrics.

Reproducibility. Training episode ``s·B + j`` is the ``j``-th episode of step ``s`` and a pure
function of ``(train.seed, s·B + j)``; dropout draws from the global torch generator, which is reseeded
before every episode from ``(train.seed, s, j)``. The saved RNG states are restored too, but the
per-episode reseed is what makes a resumed run replay the same steps, and what makes any number of
data-parallel ranks draw the same dropout masks as one process for the same global batch.

Data parallel. Launched with torchrun (``WORLD_SIZE > 1``), each rank takes the episodes ``j ≡ rank
(mod world)`` of every step, the loss module is wrapped in ``DistributedDataParallel`` (gradients are
all-reduced at the step's last backward), rank 0 validates and writes checkpoints and sends its
validation results to the other ranks. B must be a multiple of the world size. Each rank divides its
loss by its own episode count B / world and DDP averages over the ranks, so the gradient is the mean
over the B episodes, as in one process (``tests/e2e/test_torchrun.py`` runs both on CPU with gloo).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fsar_features import atomic_path, atomic_write_json, atomic_write_text
from fsar_metric import Episode, create_metric, episode_losses, metric_capabilities, metric_spec
from fsar_metric.errors import InputError
from fsar_train._config import COSMETIC_KEYS, ExperimentConfig, config_diff, config_to_dict, config_to_toml, load_config
from fsar_train._episodes import EpisodeList, EpisodeSampler
from fsar_train._evaluate import mean_ci, run_episodes
from fsar_train._features import FeatureSource, build_episode, class_anchors, hold_out_classes
from fsar_train._progress import make_progress
from fsar_train._schedule import lr_factor

__all__ = [
    "TrainResult",
    "build_metric",
    "feature_dim",
    "load_checkpoint_weights",
    "lr_factor",
    "prepare_run_dir",
    "read_checkpoint",
    "resolve_device",
    "text_dim",
    "train",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "fsar-train-checkpoint/1"


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; other names pass through."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def feature_dim(source: FeatureSource) -> int:
    """D of the source's visual features (reads one video)."""
    return int(source.visual([0]).shape[-1])


def text_dim(source: FeatureSource) -> int | None:
    """D_t of the source's text features (reads one video; its label-free text when it has it, every
    video has that one), or None when it has no text."""
    held = [p for p in ("label_free", "label_aware") if p in source.text_prompts]
    return int(source.text([0], held[0]).shape[-1]) if held else None


def build_metric(config: ExperimentConfig, in_dim: int, text_dim: int | None = None) -> nn.Module:
    """``create_metric(config.metric.name, **options)`` with widths that suit the feature widths.

    Args:
        config: the experiment (``metric.name`` and ``metric.options``).
        in_dim: D_in, the visual feature width.
        text_dim: D_t, the text feature width; None = ``in_dim``.

    What the metric's registry entry declares (``fsar_metric.metric_spec``) sets the defaults: a metric
    declared ``takes_in_dim`` gets ``in_dim = D_in``, and its declared ``sizes(D_in, D_t)`` the other
    widths that follow the feature widths (the FSAR-LLaVA head ``dim = min(D_t, 1024)``, trx
    ``key_dim = min(D_t, 1152)``); ``metric.options`` override any of them.

    Raises:
        ValueError: unknown metric, or an option it does not take (the message lists its options) or
            that was renamed (trx's ``dim`` is ``in_dim``; the message says so).
    """
    name = config.metric.name
    spec = metric_spec(name)
    defaults: dict[str, Any] = {"in_dim": in_dim} if spec.takes_in_dim else {}
    if spec.sizes is not None:
        defaults.update(spec.sizes(in_dim, in_dim if text_dim is None else text_dim))
    return create_metric(name, **{**defaults, **config.metric.options})


class _EpisodeObjective(nn.Module):
    """``episode → named loss terms``: the module DistributedDataParallel wraps (``episode_losses``
    sees the metric itself, so its declared capabilities apply)."""

    def __init__(self, metric: nn.Module) -> None:
        super().__init__()
        self.metric = metric

    def forward(self, episode: Episode) -> dict[str, Tensor]:
        return episode_losses(self.metric, episode)


@dataclass
class TrainResult:
    """What ``train`` returns.

    Attributes:
        metric: the trained metric, with the weights of the last step (``best.pt`` holds the best).
        steps: optimiser steps done so far (less than ``train.steps`` when stopped early).
        best_step: step of the best meta-val accuracy (0 when never validated).
        best_accuracy: best meta-val accuracy, %.
        history: one dict per step: step, lr, loss, each loss term, grad_norm.
        val_history: one dict per validation: step, accuracy, ci95.
        trained: False when the metric has no trainable parameters (nothing was optimised).
    """

    metric: nn.Module
    steps: int
    best_step: int
    best_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    val_history: list[dict[str, float]] = field(default_factory=list)
    trained: bool = True


def _holds_results(run_dir: Path) -> bool:
    """Whether a run folder holds anything a run produced: a checkpoint anywhere in it, or results."""
    return (run_dir / "results.json").exists() or any(run_dir.rglob("*.pt"))


def prepare_run_dir(run_dir: str | Path, config: ExperimentConfig) -> Path:
    """Create the run folder and save the resolved config, or check an existing folder's config.

    The ``eval`` section may differ (evaluation settings do not change what was trained); the saved
    file is then updated. A folder whose run produced nothing (no checkpoint, no results: it failed
    before training, e.g. on too few videos per class) takes the new config, and its derived episode
    lists are dropped, so the corrected command runs there. An unchanged config is not rewritten (a
    finished run in a read-only folder can still be shown).

    Raises:
        ValueError: the folder holds results made with a different config; the message lists the
            differences.
    """
    run_dir = Path(run_dir)
    saved_path = run_dir / "config.toml"
    if saved_path.exists():
        saved = load_config(saved_path)
        differences = config_diff(saved, config, ignore=("eval", *COSMETIC_KEYS))
        if differences and _holds_results(run_dir):
            raise InputError(
                f"run folder {run_dir} was made with a different config; use another folder or the same config. "
                "Differences (saved -> now): " + "; ".join(differences)
            )
        if differences:
            logger.warning(
                "%s held the config of a run that produced nothing (no checkpoint, no results); replacing it: %s",
                run_dir,
                "; ".join(differences),
            )
            for stale in (*run_dir.glob("val_episodes.json"), *run_dir.glob("test_episodes_*.json")):
                stale.unlink()
        elif not config_diff(saved, config, ignore=COSMETIC_KEYS):
            return run_dir  # nothing that matters changed: the saved file stays (read-only folders work)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved_path, config_to_toml(config))
    return run_dir


def _seed_for(*parts: int) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _save(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """An fsar-train checkpoint, read safely (``weights_only``: no code in the file runs).

    Raises:
        ValueError: the file is damaged (truncated by a full disk or a kill outside the atomic
            write), not safe to load, or not an fsar-train checkpoint; the message names it.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (truncated zip), EOFError, ...
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(
            f"{path} cannot be read as a checkpoint ({type(err).__name__}: {first}); it is damaged or not "
            "an fsar-train checkpoint: move it away to train again from the start"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not an fsar-train checkpoint")
    return checkpoint


def load_checkpoint_weights(metric: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a checkpoint's model weights into ``metric``; returns the checkpoint.

    Raises:
        ValueError: a damaged file or not an fsar-train checkpoint (``read_checkpoint``).
    """
    checkpoint = read_checkpoint(path)
    metric.load_state_dict(checkpoint["model"])
    return checkpoint


def _distributed() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def _from_rank0(world: int, *values: Any) -> tuple[Any, ...]:
    """``values`` as rank 0 holds them, on every rank (a collective: every rank must call it)."""
    if world == 1:
        return values
    shared = list(values)
    torch.distributed.broadcast_object_list(shared, src=0)
    return tuple(shared)


def train(
    config: ExperimentConfig,
    train_source: FeatureSource,
    val_source: FeatureSource,
    run_dir: str | Path,
    *,
    metric: nn.Module | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``config.metric`` on ``train_source`` episodes, validating on ``val_source``.

    Resumes from ``run_dir/last.pt`` when it exists. Writes ``config.toml``, ``val_episodes.json``,
    ``last.pt`` / ``best.pt`` and ``history.json`` into ``run_dir``.

    Args:
        config: the experiment config (its ``train``, ``episodes`` and ``metric`` sections are used).
        train_source: meta-train features.
        val_source: meta-val features (model selection; the test split is never used here). With
            ``train.val_train_classes`` > 0, that many meta-train classes move from training to
            validation (``hold_out_classes``).
        run_dir: the run folder.
        metric: a pre-built metric instead of ``build_metric(config, D)`` (its weights are then
            whatever it holds).
        stop_after: stop once this global step is done, without writing a checkpoint (simulates a
            killed run).
        progress: draw a progress bar.
        on_step: called after every optimiser step with ``(step, logged values)``.

    Returns:
        The trained metric and its logs.

    Raises:
        ValueError: a different config in ``run_dir``, B not a multiple of the world size, or a
            class with too few videos for the episode sizes.
    """
    tc = config.train
    run_dir = prepare_run_dir(run_dir, config)
    train_source, val_source = hold_out_classes(train_source, val_source, tc.val_train_classes, tc.val_seed)
    world, rank, local_rank = _distributed()
    if tc.episodes_per_step % world:
        raise InputError(f"train.episodes_per_step = {tc.episodes_per_step} must be a multiple of WORLD_SIZE = {world}")
    device = resolve_device(tc.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        # The backend follows the training device, not CUDA's presence: train.device=cpu on a GPU
        # machine all-reduces CPU tensors, which NCCL cannot.
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    fork_devices = [device] if device.type == "cuda" else []
    # The caller's global RNG state is left as it was: everything random here happens inside the fork.
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(tc.seed)
        if metric is None:
            metric = build_metric(config, feature_dim(train_source), text_dim(train_source))
        metric.to(device)
        return _train_loop(
            config, metric, train_source, val_source, run_dir, device, world, rank, stop_after, progress, on_step
        )


def _train_loop(
    config: ExperimentConfig,
    metric: nn.Module,
    train_source: FeatureSource,
    val_source: FeatureSource,
    run_dir: Path,
    device: torch.device,
    world: int,
    rank: int,
    stop_after: int | None,
    progress: bool,
    on_step: Callable[[int, dict[str, float]], None] | None,
) -> TrainResult:
    tc, ec = config.train, config.episodes
    is_main = rank == 0
    val_list = EpisodeList.load_or_sample(
        run_dir / "val_episodes.json",
        val_source.labels,
        val_source.video_ids,
        count=tc.val_episodes,
        n_way=ec.n_way,
        n_shot=ec.n_shot,
        n_query=ec.test_queries,
        seed=tc.val_seed,
        split="val",
        class_names=val_source.class_names,
    )

    def validate() -> tuple[float, float]:
        accuracies, _, _ = run_episodes(metric, val_source, val_list, device=device)
        mean, ci = mean_ci(accuracies)
        return 100 * mean, 100 * ci

    params = [p for p in metric.parameters() if p.requires_grad]
    if not params:
        logger.info("metric %r has no trainable parameters: nothing to train, validating once", config.metric.name)
        accuracy, ci = _from_rank0(world, *(validate() if is_main else (0.0, 0.0)))
        payload = {"format": CHECKPOINT_FORMAT, "step": 0, "model": metric.state_dict(), "best_accuracy": accuracy}
        if is_main:
            _save(run_dir / "best.pt", payload)
            _save(run_dir / "last.pt", payload)
        return TrainResult(metric, 0, 0, accuracy, [], [{"step": 0, "accuracy": accuracy, "ci95": ci}], trained=False)

    sampler = EpisodeSampler(
        train_source.labels,
        ec.n_way,
        ec.n_shot,
        ec.train_queries,
        seed=tc.seed,
        class_names=train_source.class_names,
    )
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, warmup=tc.warmup_steps, total=tc.steps, final_ratio=tc.final_lr_ratio),
    )
    step, best_step, best_accuracy = 0, 0, -1.0
    history: list[dict[str, float]] = []
    val_history: list[dict[str, float]] = []
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if last_path.exists():
        checkpoint = read_checkpoint(last_path)
        metric.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if device.type == "cuda" and checkpoint["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"][0], device)
        step, best_step, best_accuracy = checkpoint["step"], checkpoint["best_step"], checkpoint["best_accuracy"]
        history, val_history = list(checkpoint["history"]), list(checkpoint["val_history"])
        logger.info(
            "resumed %s from step %d (best meta-val %.2f %% at step %d)", run_dir, step, best_accuracy, best_step
        )

    objective: nn.Module = _EpisodeObjective(metric)
    if world > 1:
        objective = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    with_text = metric_capabilities(metric).uses_text
    anchors = class_anchors(train_source) if with_text else None
    weights = dict(tc.loss_weights)
    local = list(range(rank, tc.episodes_per_step, world))  # this rank's share of each step's episodes
    use_autocast = tc.autocast == "bf16" and device.type == "cuda"

    def checkpoint_payload() -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "model": metric.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            },
            "best_step": best_step,
            "best_accuracy": best_accuracy,
            "history": history,
            "val_history": val_history,
            "config": config_to_dict(config),
        }

    metric.train()
    with make_progress(progress and is_main) as bar:
        task = bar.add_task(f"train {config.metric.name}", total=tc.steps, completed=step, info="")
        while step < tc.steps and (stop_after is None or step < stop_after):
            optimizer.zero_grad(set_to_none=True)
            sums: dict[str, float] = {}
            for n, j in enumerate(local):
                # Seeded by the global episode index, not the rank: one process and any number of
                # ranks draw the same dropout masks for the same global batch.
                torch.manual_seed(_seed_for(tc.seed, step, j))
                episode = build_episode(
                    train_source,
                    sampler.episode(step * tc.episodes_per_step + j),
                    with_text=with_text,
                    anchors=anchors,
                    device=device,
                )
                sync = world == 1 or n == len(local) - 1
                no_sync = objective.no_sync() if not sync else contextlib.nullcontext()  # type: ignore[operator]
                with no_sync, torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
                    terms = objective(episode)
                    total = sum(weights.get(k, 1.0) * v for k, v in terms.items() if weights.get(k, 1.0) != 0)
                    if not isinstance(total, Tensor):
                        raise InputError(f"every loss term has weight 0: {sorted(terms)}")
                    (total / len(local)).backward()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                sums["loss"] = sums.get("loss", 0.0) + float(total.detach())
            if world > 1:
                keys = sorted(sums)
                packed = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=device)
                torch.distributed.all_reduce(packed)
                sums = dict(zip(keys, packed.tolist(), strict=True))
            clip = tc.grad_clip if tc.grad_clip > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            step += 1
            logged = {"step": step, "lr": lr, "grad_norm": grad_norm}
            logged.update({k: v / tc.episodes_per_step for k, v in sums.items()})
            history.append(logged)
            info = f"loss {logged['loss']:.3f}"
            if step % tc.val_every == 0 or step == tc.steps:
                if is_main:
                    accuracy, ci = validate()
                    val_history.append({"step": step, "accuracy": accuracy, "ci95": ci})
                    logger.info("step %d: meta-val %.2f ± %.2f %%", step, accuracy, ci)
                    if accuracy > best_accuracy:
                        best_step, best_accuracy = step, accuracy
                        _save(
                            best_path,
                            {"format": CHECKPOINT_FORMAT, "step": step, "model": metric.state_dict(),
                             "best_accuracy": accuracy},
                        )  # fmt: skip
                # Every rank returns rank 0's validation results (and waits for its best.pt).
                val_history, best_step, best_accuracy = _from_rank0(world, val_history, best_step, best_accuracy)
            if val_history:
                info += f"  val {val_history[-1]['accuracy']:.1f}% (best {best_accuracy:.1f}% @ {best_step})"
            if step % tc.log_every == 0:
                logger.info("step %d/%d lr %.2e loss %.4f grad %.3f", step, tc.steps, lr, logged["loss"], grad_norm)
            bar.update(task, completed=step, info=info)
            if on_step is not None:
                on_step(step, logged)
            if (step % tc.checkpoint_every == 0 or step == tc.steps) and (stop_after is None or step < stop_after):
                if is_main:
                    _save(last_path, checkpoint_payload())
                    atomic_write_json(run_dir / "history.json", {"train": history, "val": val_history})
                if world > 1:
                    torch.distributed.barrier()
    return TrainResult(metric, step, best_step, best_accuracy, history, val_history)
