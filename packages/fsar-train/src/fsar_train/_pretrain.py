"""Pretraining a tiny Video-LLaVA on synthetic-actions captions: an offline MLLM that knows something.

FSAR-LLaVA's premise is that what an MLLM learned from language transfers to action classes it has
never seen. Offline, the only MLLM at hand is a random-weight tiny one, so this module gives it
knowledge the honest way: next-token training of the whole model (vision tower, projector,
decoder) on (video, prompt, answer) triples built from **meta-train videos only**:

- ``query-label``: the label-free query prompt → the class name ("moving something up");
- ``support-caption``: the label-aware support prompt (it names the class) → the video's
  procedurally written caption (object size, colour and shape, motion, speed, scene);
- ``query-caption``: the query prompt → the caption (off by default);
- ``query-direction`` and ``query-manner``: motion-only questions (``pretrain_questions.toml``: "which
  way does the object move?", "how does it move over time?") → the path alone ("from left to
  right", "clockwise") or the manner alone ("slows down and stops", "there and back"). A class name
  ties manner and direction together; these two make the model perceive and name each on its own,
  which is what a held-out (manner, direction) combination needs.

Class names are compositions of primitives and the split holds out combinations (``_synthetic``),
so every word of a meta-test class name is known, and no meta-test combination is seen.

The model is transformers' ``VideoLlavaForConditionalGeneration``, built by fsar-features' public
``tiny_backend(VIDEO_LLAVA, TinyShape(...))`` (``fsar_features.backends``, the same code path as the
``tiny-video-llava`` backend) with a word-level tokenizer built in code (``build_word_tokenizer``,
vocabulary: the words of the meta-train labels and captions and of the prompts); frames are read
by ``FeatureExtractor.read`` and inputs made by the same ``HFVideoBackend.pixel_values`` /
``tokenize`` the feature extractor uses, so the pretrained model sees exactly the sequences it
later encodes. The result is written with
``save_pretrained`` (plus ``preprocessor_config.json`` and ``pretrain.json``: config, seed, command,
metrics) and loads by path through the ``video-llava`` backend like the real checkpoint.

Validation: a seeded ``val_fraction`` of the meta-train videos is held out of the gradient steps;
token accuracy, label exact match and loss on them are logged every ``eval_every`` steps. A run
is resumable: its state is saved atomically at every evaluation and picked up by the same command.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fsar_features import ExtractionConfig, FeatureExtractor, atomic_path
from fsar_features.backends import (
    CLIP_MEAN,
    CLIP_STD,
    VIDEO_LLAVA,
    HFVideoBackend,
    TinyShape,
    build_word_tokenizer,
    tiny_backend,
)
from fsar_metric.errors import InputError, MissingFileError, OutputExistsError, as_input_error
from fsar_prompts import (
    PromptError,
    RenderedPrompt,
    TemplateSet,
    list_roles,
    load_templates,
    render_prompt,
    scenario_for,
)
from fsar_train._config import ExperimentConfig, PretrainConfig, config_to_toml
from fsar_train._progress import make_progress
from fsar_train._schedule import lr_factor
from fsar_train._synthetic import BEHAVIOURS, DIRECTIONS, MANNERS, generate_synthetic_actions

__all__ = [
    "PRETRAIN_TASKS",
    "PretrainResult",
    "PretrainRow",
    "PretrainTask",
    "evaluate_pretrained",
    "list_pretrain_tasks",
    "load_pretrain_state",
    "mirror_text",
    "motion_answers",
    "pretrain_table",
    "pretrain_video_llava",
    "pretrain_vocabulary",
    "read_pretrain_rows",
]

logger = logging.getLogger(__name__)

IGNORE = -100  # label id the loss skips (prompt and video tokens)


@dataclass(frozen=True)
class PretrainRow:
    """One meta-train video of the pretraining set."""

    video_id: str
    path: Path
    label: str
    caption: str
    direction: str = ""  # the path alone, e.g. "from left to right" (``motion_answers``)
    manner: str = ""  # the manner alone, e.g. "slows down and stops"


#: The motion-only answers: the words a class's path and manner are named by on their own. Direction
#: answers are the class-name words; a behaviour outside the manner × direction product gets the path it
#: shows ("something falling down" moves down) and a manner phrase of its own.
_DIRECTION_ANSWERS: dict[str, str] = {
    **dict(DIRECTIONS),
    "falling": "down",
    "bouncing": "up and down",
    "spin_cw": "clockwise",
    "spin_ccw": "counterclockwise",
}
_MANNER_ANSWERS: dict[str, str] = {
    "moving": "at a steady speed",
    "pushing": "slows down and stops",
    "back": "there and back",
    "pretending": "starts to move but returns",
    "faster": "faster and faster",
    "falling": "falls and bounces once",
    "bouncing": "bounces three times",
    "spin_cw": "spins in place",
    "spin_ccw": "spins in place",
}


def motion_answers(manner: str, direction: str, behaviour: str) -> tuple[str, str]:
    """(direction answer, manner answer) of a synthetic-actions class given by its manifest keys.

    Example:
        >>> motion_answers("pushing", "right", "")
        ('from left to right', 'slows down and stops')
        >>> motion_answers("", "", "falling")
        ('down', 'falls and bounces once')

    Raises:
        ValueError: keys that name no class primitive.
    """
    key_direction, key_manner = (behaviour, behaviour) if behaviour else (direction, manner)
    if key_direction not in _DIRECTION_ANSWERS or key_manner not in _MANNER_ANSWERS:
        raise InputError(
            f"no motion answer for manner={manner!r} direction={direction!r} behaviour={behaviour!r}; "
            f"manners {sorted(k for k, _ in MANNERS)}, directions {sorted(k for k, _ in DIRECTIONS)}, "
            f"behaviours {sorted(k for k, _ in BEHAVIOURS)}"
        )
    return _DIRECTION_ANSWERS[key_direction], _MANNER_ANSWERS[key_manner]


@dataclass(frozen=True)
class PretrainTask:
    """What the model reads after the video and what it must say.

    Attributes:
        role: the prompt role, ``query`` (label-free) or ``support`` (label-aware).
        answer: the answer text of a row.
        question: a scenario of the pretraining questions (``pretrain_questions.toml``) asked instead
            of the run's own prompt of that role; None: the run's prompt.
    """

    role: str
    answer: Callable[[PretrainRow], str]
    question: str | None = None


#: task name → its prompt and answer (``pretrain.tasks``).
PRETRAIN_TASKS: dict[str, PretrainTask] = {
    "query-label": PretrainTask("query", lambda row: row.label),
    "support-caption": PretrainTask("support", lambda row: row.caption),
    "query-caption": PretrainTask("query", lambda row: row.caption),
    "query-direction": PretrainTask("query", lambda row: row.direction, question="ask-direction"),
    "query-manner": PretrainTask("query", lambda row: row.manner, question="ask-manner"),
}


@functools.cache
def pretrain_questions() -> TemplateSet:
    """The motion-only questions of the pretraining tasks (``fsar_train/pretrain_questions.toml``)."""
    with as_file(files("fsar_train") / "pretrain_questions.toml") as path:
        return load_templates(path)


def list_pretrain_tasks() -> list[str]:
    """Task names accepted by ``pretrain.tasks``."""
    return list(PRETRAIN_TASKS)


@dataclass(frozen=True)
class PretrainResult:
    """What ``pretrain_video_llava`` wrote and measured."""

    out_dir: Path
    metrics: dict[str, float]  # final held-out metrics (``evaluate_pretrained``)
    history: list[dict[str, float]]  # per logged step: step, loss, lr
    val_history: list[dict[str, float]]  # per evaluation: step + metrics
    seconds: float


def read_pretrain_rows(root: str | Path, split: str = "train") -> list[PretrainRow]:
    """The videos of one synthetic-actions split with label and caption (``manifest.csv``).

    Raises:
        FileNotFoundError: ``root`` has no manifest.csv (generate the data first).
    """
    root = Path(root)
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise MissingFileError(f"{manifest} does not exist; generate synthetic-actions first (`fsar-train synth`)")
    with manifest.open(newline="", encoding="utf-8") as handle:
        return [
            PretrainRow(
                r["video_id"],
                root / r["path"],
                r["label"],
                r["caption"],
                *motion_answers(r["manner"], r["direction"], r["behaviour"]),
            )
            for r in csv.DictReader(handle)
            if r["split"] == split
        ]


def _prompt(role: str, scenario: str, label: str | None, question: str | None = None) -> RenderedPrompt:
    if question is not None:
        return render_prompt(
            VIDEO_LLAVA.name, role, question, label=None if role == "query" else label, templates=pretrain_questions()
        )  # type: ignore[arg-type]
    return render_prompt(VIDEO_LLAVA.name, role, scenario, label=None if role == "query" else label)  # type: ignore[arg-type]


def pretrain_vocabulary(rows: Sequence[PretrainRow], scenario: str, tasks: Sequence[str] = ()) -> list[str]:
    """Words of the tokenizer: the rows' labels and captions, the prompts of every role, and the
    questions and answers of the motion-only ``tasks`` among those given.

    Only the given (meta-train) rows are read; the split design puts every word of a meta-test class
    name into some meta-train name, so held-out labels encode word by word too. The motion-only
    texts join the vocabulary only when their task is trained, so a model made without them keeps the
    tokenizer (and the bytes) it had.
    """
    texts = {row.label for row in rows} | {row.caption for row in rows}
    for role in list_roles():
        prompt = _prompt(role, scenario, "something")
        texts.add(f"{prompt.prefix} {prompt.suffix}")
    for name in tasks:
        task = PRETRAIN_TASKS[name]
        if task.question is not None:
            prompt = _prompt(task.role, scenario, "something", task.question)
            texts.add(f"{prompt.prefix} {prompt.suffix}")
            texts |= {task.answer(row) for row in rows}
    return sorted(texts)


def _tasks(config: PretrainConfig) -> list[str]:
    bad = [t for t in config.tasks if t not in PRETRAIN_TASKS]
    if bad or not config.tasks:
        raise InputError(f"pretrain.tasks must name tasks from {list_pretrain_tasks()}, got {list(config.tasks)}")
    return list(config.tasks)


def _check(config: PretrainConfig) -> None:
    checks = [
        (config.steps >= 1, f"pretrain.steps must be at least 1, got {config.steps}"),
        (config.batch_size >= 1, f"pretrain.batch_size must be at least 1, got {config.batch_size}"),
        (config.eval_every >= 1, f"pretrain.eval_every must be at least 1, got {config.eval_every}"),
        (0.0 < config.val_fraction < 1.0, f"pretrain.val_fraction must be in (0, 1), got {config.val_fraction}"),
        (config.lr > 0, f"pretrain.lr must be positive, got {config.lr}"),
        (
            config.image_size % config.patch_size == 0,
            f"pretrain.image_size ({config.image_size}) must be a multiple of patch_size ({config.patch_size})",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(message)
    _tasks(config)


class _Batcher:
    """Builds padded training batches: ``prompt ids + answer ids + </s>``, loss on the answer only."""

    def __init__(self, backend: HFVideoBackend, scenario: str, n_frames: int) -> None:
        self.backend = backend
        self.scenario = scenario
        self.n_frames = n_frames
        self._prompt_ids: dict[tuple[str, str | None, str | None], list[int]] = {}

    def sequence(self, row: PretrainRow, task: str) -> tuple[list[int], list[int]]:
        spec = PRETRAIN_TASKS[task]
        answer = spec.answer(row)
        if not answer:
            raise InputError(
                f"task {task!r} has no answer for video {row.video_id!r} (a manifest without motion keys?)"
            )
        key = (spec.role, None if spec.role == "query" else row.label, spec.question)
        if key not in self._prompt_ids:
            prompt = _prompt(spec.role, self.scenario, key[1], spec.question)
            self._prompt_ids[key] = self.backend.tokenize(prompt, self.n_frames)
        prompt = self._prompt_ids[key]
        tokenizer = self.backend.tokenizer
        target = [*list(tokenizer(" " + answer, add_special_tokens=False).input_ids), int(tokenizer.eos_token_id)]
        return prompt + target, [IGNORE] * len(prompt) + target

    def batch(self, rows: Sequence[PretrainRow], tasks: Sequence[str], frames: np.ndarray) -> dict[str, Tensor]:
        """``frames``: uint8 ``[B, T, H, W, 3]`` of ``rows``; returns model inputs with ``labels``."""
        pairs = [self.sequence(row, task) for row, task in zip(rows, tasks, strict=True)]
        length = max(len(ids) for ids, _ in pairs)
        input_ids = torch.full((len(pairs), length), self.backend.pad_token_id, dtype=torch.long)
        labels = torch.full((len(pairs), length), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(pairs), length), dtype=torch.long)
        for b, (ids, target) in enumerate(pairs):  # right padding: real tokens keep their positions
            input_ids[b, : len(ids)] = torch.tensor(ids)
            labels[b, : len(target)] = torch.tensor(target)
            mask[b, : len(ids)] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": labels,
            "pixel_values_videos": self.backend.pixel_values(frames),
        }


#: Words a left-right mirror swaps (the directions it reverses; up, down, towards and away stay).
_MIRRORED = {"left": "right", "right": "left", "clockwise": "counterclockwise", "counterclockwise": "clockwise"}


def mirror_text(text: str) -> str:
    """The description of the left-right mirrored video: swaps left/right and (counter)clockwise.

    Example:
        >>> mirror_text("moving something from left to right and back")
        'moving something from right to left and back'
    """
    return " ".join(_MIRRORED.get(word, word) for word in text.split(" "))


def mirror_row(row: PretrainRow) -> PretrainRow:
    """The row of the mirrored video (label, caption and direction answer mirrored)."""
    return dataclasses.replace(
        row, label=mirror_text(row.label), caption=mirror_text(row.caption), direction=mirror_text(row.direction)
    )


def _decode(rows: Sequence[PretrainRow], extractor: FeatureExtractor, progress: bool, what: str) -> np.ndarray:
    """uint8 ``[V, T, crop, crop, 3]``: each video's frames as ``extractor`` reads them for extraction."""
    size = extractor.backend.crop_size
    out = np.empty((len(rows), extractor.config.n_frames, size, size, 3), dtype=np.uint8)
    with make_progress(progress) as bar:
        task = bar.add_task(f"decode {what}", total=len(rows), info="")
        for i, row in enumerate(rows):
            out[i] = extractor.read(row.path, row.video_id).frames
            bar.advance(task)
    return out


def _split_held_out(rows: Sequence[PretrainRow], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, held-out) positions; at least one video per side."""
    order = np.random.default_rng([seed, 1]).permutation(len(rows))
    n_val = min(max(1, round(fraction * len(rows))), len(rows) - 1)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


@torch.no_grad()
def evaluate_pretrained(
    model: nn.Module,
    batcher: _Batcher,
    rows: Sequence[PretrainRow],
    frames: np.ndarray,
    tasks: Sequence[str],
    *,
    batch_size: int = 32,
) -> dict[str, float]:
    """Teacher-forced metrics per task on ``rows``: ``<task>/loss`` (mean per answer token),
    ``<task>/token_acc`` (greedy next-token accuracy) and ``<task>/exact`` (share of answers with
    every token right); ``loss`` averages the tasks."""
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    for task in tasks:
        nll = correct = tokens = exact = 0.0
        for start in range(0, len(rows), batch_size):
            stop = min(start + batch_size, len(rows))
            batch = batcher.batch(rows[start:stop], [task] * (stop - start), frames[start:stop])
            labels = batch.pop("labels")
            logits = model(**batch).logits[:, :-1].float()  # [B, S-1, vocab]
            target = labels[:, 1:]
            keep = target != IGNORE
            losses = nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE, reduction="none")
            hits = (logits.argmax(-1) == target) & keep
            nll += float(losses.sum())
            correct += float(hits.sum())
            tokens += float(keep.sum())
            exact += float((hits | ~keep).all(dim=1).sum())
        metrics[f"{task}/loss"] = nll / tokens
        metrics[f"{task}/token_acc"] = correct / tokens
        metrics[f"{task}/exact"] = exact / len(rows)
    metrics["loss"] = float(np.mean([metrics[f"{t}/loss"] for t in tasks]))
    model.train(was_training)
    return metrics


def load_pretrain_state(path: Path) -> dict[str, Any]:
    """A resumable pretraining state, read without running any code it may hold.

    ``torch.load(weights_only=True)`` takes tensors, numbers, strings and containers only; a file
    with anything else (a planted pickle that would run a command) is refused.

    Raises:
        ValueError: the file is not a state this command wrote (unreadable, or not safe to load).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError by cause
        raise InputError(
            f"{path} is not a pretraining state this command wrote ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'unreadable'}); delete it to start over"
        ) from None
    if not isinstance(state, dict) or not {"model", "optimizer", "scheduler", "step"} <= set(state):
        raise InputError(f"{path} is not a pretraining state this command wrote; delete it to start over")
    return state


def _lr_factor(step: int, config: PretrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak (``lr_factor``; the cosine would end one
    step after the last, as it always has: the shipped model stays reproducible)."""
    return lr_factor(step, warmup=config.warmup_steps, total=config.steps, final_ratio=0.1, ends="after-last-step")


def _build(config: PretrainConfig, words: Sequence[str]) -> tuple[nn.Module, HFVideoBackend]:
    shape = TinyShape(
        hidden_size=config.hidden_size,
        n_layers=config.n_layers,
        image_size=config.image_size,
        patch_size=config.patch_size,
        vision_hidden_size=config.vision_hidden_size,
        vision_layers=config.vision_layers,
        vision_feature_layer=config.vision_feature_layer,
    )
    backend = tiny_backend(
        VIDEO_LLAVA,
        shape,
        seed=config.seed,
        tokenizer=build_word_tokenizer(words),
        n_frames=config.n_frames,
        name="video-llava",
        model_id="pretraining",
    )
    model = backend.model
    model.requires_grad_(True).train()  # the backend froze it for feature extraction; here it learns
    return model, backend


def _fingerprint(config: ExperimentConfig) -> dict[str, Any]:
    return {"pretrain": dataclasses.asdict(config.pretrain), "synthetic": dataclasses.asdict(config.synthetic)}


def _check_out_dir(out_dir: Path) -> None:
    """Refuse to replace a folder that is not a model this command wrote (the user's files would be lost)."""
    if out_dir.exists() and (
        not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "pretrain.json").exists())
    ):
        raise OutputExistsError(
            f"{out_dir} exists and is not a pretrained model folder (no pretrain.json); choose another --out"
        )


def _save_model(
    out_dir: Path,
    model: nn.Module,
    backend: HFVideoBackend,
    config: ExperimentConfig,
    info: dict[str, Any],
    history: Sequence[dict[str, float]],
    val_history: Sequence[dict[str, float]],
) -> None:
    """Write the model folder next to ``out_dir`` and swap it in (a reader never sees half a model)."""
    staging = out_dir.with_name(f".{out_dir.name}.writing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.eval().save_pretrained(staging)
    backend.tokenizer.save_pretrained(staging)
    size = config.pretrain.image_size
    preprocessor = {
        "size": {"shortest_edge": size},
        "crop_size": {"height": size, "width": size},
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
    }
    (staging / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
    info = {**info, "weights_sha256": hashlib.sha256((staging / "model.safetensors").read_bytes()).hexdigest()}
    (staging / "pretrain.json").write_text(json.dumps(info, indent=2) + "\n")
    loss_rows = ["step,loss,lr", *(f"{h['step']},{h['loss']:.6f},{h['lr']:.6g}" for h in history)]
    (staging / "loss.csv").write_text("\n".join(loss_rows) + "\n")
    _plot(history, val_history, staging / "loss.png")
    old = out_dir.with_name(f".{out_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        _check_out_dir(out_dir)
        for path in out_dir.iterdir():  # files this command does not write (notes, reproduction.json) stay
            if path.is_file() and not (staging / path.name).exists():
                shutil.copy2(path, staging / path.name)
        out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _plot(history: Sequence[dict[str, float]], val_history: Sequence[dict[str, float]], path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.4), layout="constrained")
    loss_ax, acc_ax = figure.subplots(1, 2)
    loss_ax.plot([h["step"] for h in history], [h["loss"] for h in history], linewidth=0.8, label="train (batch)")
    if val_history:
        loss_ax.plot([v["step"] for v in val_history], [v["loss"] for v in val_history], marker="o", label="held-out")
        for key in sorted(k for k in val_history[0] if k.endswith(("/token_acc", "/exact"))):
            acc_ax.plot([v["step"] for v in val_history], [100 * v[key] for v in val_history], marker=".", label=key)
    loss_ax.set(xlabel="step", ylabel="next-token loss", yscale="log", title="pretraining loss")
    acc_ax.set(xlabel="step", ylabel="%", title="held-out meta-train videos")
    loss_ax.legend(fontsize=8)
    acc_ax.legend(fontsize=7)
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=110)


def pretrain_video_llava(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    command: str = "",
) -> PretrainResult:
    """Pretrain a tiny Video-LLaVA on the meta-train videos of ``config``'s synthetic-actions.

    Args:
        config: a synthetic-actions config (``data.format = "synthetic"``); ``config.pretrain``
            holds the model size and schedule, ``config.synthetic`` the data (generated if missing).
        out_dir: the model folder to write (``save_pretrained`` layout); its ``.pretrain-state.pt``
            sibling makes an interrupted run resumable.
        progress: progress bars.
        command: the command line, recorded in ``pretrain.json``.

    Returns:
        The folder, final held-out metrics and the loss history.

    Raises:
        ValueError: not a synthetic-actions config, or a bad ``pretrain`` setting (named).
    """
    if config.data.format != "synthetic":
        raise InputError(
            f"pretraining reads synthetic-actions captions; data.format is {config.data.format!r} (need 'synthetic')"
        )
    pre = config.pretrain
    _check(pre)
    tasks = _tasks(pre)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    started = time.perf_counter()
    root = Path(config.data.root)
    generate_synthetic_actions(root, config.synthetic, progress=progress)
    rows = read_pretrain_rows(root, "train")
    with as_input_error(PromptError, context="data.benchmark: "):
        scenario = config.features.scenario or scenario_for(config.data.benchmark)
    model, backend = _build(pre, pretrain_vocabulary(rows, scenario, tasks))
    batcher = _Batcher(backend, scenario, pre.n_frames)
    train_pos, val_pos = _split_held_out(rows, pre.val_fraction, pre.seed)
    train_labels = {row.label for row in rows}
    mirrorable = {p for p in train_pos if mirror_text(rows[p].label) in train_labels}
    # The extractor's own reader: the pretrained model sees the frames extraction will give it.
    extractor = FeatureExtractor(backend, ExtractionConfig(n_frames=pre.n_frames, scenario=scenario))
    frames = _decode(rows, extractor, progress, "meta-train videos")
    val_rows, val_frames = [rows[i] for i in val_pos], frames[val_pos]

    optimizer = torch.optim.AdamW(model.parameters(), lr=pre.lr, weight_decay=pre.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, pre))
    history: list[dict[str, float]] = []
    val_history: list[dict[str, float]] = []
    state_path = out_dir.with_name(f".{out_dir.name}.pretrain-state.pt")
    fingerprint = _fingerprint(config)
    first = 0
    if state_path.exists():
        state = load_pretrain_state(state_path)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history, val_history, first = state["history"], state["val_history"], int(state["step"])
            logger.info("resuming pretraining at step %d from %s", first, state_path)
        else:
            logger.warning("%s was written with other settings; starting over", state_path)

    with make_progress(progress) as bar:
        task_id = bar.add_task("pretrain tiny Video-LLaVA", total=pre.steps, completed=first, info="")
        for step in range(first, pre.steps):
            rng = np.random.default_rng([pre.seed, step])  # the batch of a step depends on nothing else
            picks = rng.choice(len(train_pos), size=min(pre.batch_size, len(train_pos)), replace=False)
            positions = [train_pos[i] for i in picks]
            batch_tasks = [tasks[i] for i in rng.integers(0, len(tasks), size=len(positions))]
            batch_rows, batch_frames = [rows[p] for p in positions], frames[positions]
            if pre.mirror:
                # Mirror a video only where its mirrored class is a meta-train class too: a mirrored
                # meta-train video can show a held-out combination, which must never be trained on.
                flip = (rng.random(len(positions)) < 0.5) & np.array([p in mirrorable for p in positions], dtype=bool)
                batch_rows = [mirror_row(r) if f else r for r, f in zip(batch_rows, flip, strict=True)]
                batch_frames = np.where(flip[:, None, None, None, None], batch_frames[:, :, :, ::-1], batch_frames)
            batch = batcher.batch(batch_rows, batch_tasks, batch_frames)
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), pre.grad_clip)
            optimizer.step()
            scheduler.step()
            history.append({"step": step + 1, "loss": loss.detach().item(), "lr": scheduler.get_last_lr()[0]})
            done = step + 1
            if done % pre.eval_every == 0 or done == pre.steps:
                metrics = evaluate_pretrained(model, batcher, val_rows, val_frames, tasks)
                val_history.append({"step": done, **metrics})
                state = {
                    "fingerprint": fingerprint,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "history": history,
                    "val_history": val_history,
                    "step": done,
                }
                state_path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(state_path, suffix=".pt") as tmp:
                    torch.save(state, tmp)
            recent = np.mean([h["loss"] for h in history[-20:]])
            shown = f"loss {recent:.3f}" + (f" · held-out {val_history[-1]['loss']:.3f}" if val_history else "")
            bar.update(task_id, advance=1, info=shown)

    # The last step always evaluates (and a resumed finished run saved that evaluation).
    metrics = {k: v for k, v in val_history[-1].items() if k != "step"}
    seconds = time.perf_counter() - started
    import transformers

    info = {
        "what": "tiny Video-LLaVA pretrained by fsar on synthetic-actions meta-train captions",
        "command": command,
        "seed": pre.seed,
        "config": config_to_toml(config),
        "tasks": tasks,
        "train_videos": len(train_pos),
        "held_out_videos": len(val_pos),
        "splits_read": ["train"],
        "held_out_metrics": metrics,
        "val_history": val_history,
        "seconds": round(seconds, 1),
        "machine": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
        },
    }
    _save_model(out_dir, model, backend, config, info, history, val_history)
    state_path.unlink(missing_ok=True)
    return PretrainResult(out_dir, metrics, history, val_history, seconds)


def pretrain_table(result: PretrainResult) -> Any:
    """A rich table of the held-out metrics per task (loss, token accuracy, exact answers)."""
    from rich.table import Table

    table = Table(title=f"pretraining: held-out meta-train videos ({result.out_dir.name})")
    for column in ("task", "loss / token", "token accuracy", "exact answers"):
        table.add_column(column, justify="left" if column == "task" else "right")
    tasks = sorted({key.split("/")[0] for key in result.metrics if "/" in key})
    for task in tasks:
        m = result.metrics
        table.add_row(task, f"{m[task + '/loss']:.3f}", f"{100 * m[task + '/token_acc']:.1f} %",
                      f"{100 * m[task + '/exact']:.1f} %")  # fmt: skip
    return table
