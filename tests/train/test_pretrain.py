"""Pretraining the tiny Video-LLaVA on synthetic-actions captions (fsar_train._pretrain)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import fsar_train._pretrain as pretrain_module
from fsar_features import FeatureExtractor, create_backend, read_frames
from fsar_train import (
    ExperimentConfig,
    apply_overrides,
    evaluate_pretrained,
    list_pretrain_tasks,
    load_preset,
    pretrain_video_llava,
    read_pretrain_rows,
)


@pytest.fixture(scope="module")
def small_config(tmp_path_factory):
    """66 meta-train videos of 8 frames at 32 px, a few steps of a small model."""
    root = tmp_path_factory.mktemp("synthetic")
    return apply_overrides(
        load_preset("synthetic-actions-llava"),
        [
            f"data.root='{root}'",
            "synthetic.videos_per_class=2",
            "synthetic.n_frames=8",
            "synthetic.size=32",
            "synthetic.workers=1",
            "pretrain.steps=24",
            "pretrain.batch_size=8",
            "pretrain.eval_every=12",
            "pretrain.warmup_steps=2",
            "pretrain.lr=3e-3",
            "pretrain.val_fraction=0.2",
        ],
    )


@pytest.fixture(scope="module")
def pretrained(small_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny"
    return pretrain_video_llava(small_config, out, progress=False, command="test")


def test_the_tasks_are_registered():
    assert list_pretrain_tasks() == [
        "query-label",
        "support-caption",
        "query-caption",
        "query-direction",
        "query-manner",
    ]


def test_pretraining_writes_a_model_the_video_llava_backend_loads_by_path(pretrained, small_config):
    out = pretrained.out_dir
    for name in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", "pretrain.json"):
        assert (out / name).is_file(), name
    assert (out / "loss.png").stat().st_size > 1000
    assert len((out / "loss.csv").read_text().splitlines()) == 1 + 24
    info = json.loads((out / "pretrain.json").read_text())
    assert info["seed"] == 0
    assert info["splits_read"] == ["train"]
    assert info["command"] == "test"
    assert info["held_out_metrics"] == pytest.approx(pretrained.metrics)
    import hashlib

    assert info["weights_sha256"] == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    backend = create_backend("video-llava", model=str(out))
    assert backend.hidden_size == small_config.pretrain.hidden_size
    assert backend.tokens_per_frame == (32 // 8) ** 2 + 1
    row = read_pretrain_rows(small_config.data.root, "test")[0]
    clip = read_frames(row.path, 8, size=backend.frame_size)
    features = FeatureExtractor(backend).extract_clips([clip], [row.video_id], [row.label])[0]
    assert features.visual.shape == (8, backend.hidden_size)
    assert torch.isfinite(features.visual).all()


def test_pretraining_lowers_the_held_out_loss(pretrained):
    first, last = pretrained.val_history[0], pretrained.val_history[-1]
    assert [v["step"] for v in pretrained.val_history] == [12, 24]
    assert pretrained.history[0]["loss"] > 4.0  # ≈ ln(vocabulary) at initialisation
    assert last["loss"] < pretrained.history[0]["loss"] - 1.5
    assert last["loss"] <= first["loss"]
    for task in ("query-label", "support-caption"):
        assert 0.0 <= pretrained.metrics[f"{task}/exact"] <= pretrained.metrics[f"{task}/token_acc"] <= 1.0


def test_pretraining_reads_meta_train_videos_only(small_config, tmp_path, monkeypatch):
    opened = []
    real = FeatureExtractor.read

    def spy(self, path, *args, **kwargs):
        opened.append(str(path))
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(FeatureExtractor, "read", spy)
    config = apply_overrides(small_config, ["pretrain.steps=1", "pretrain.eval_every=1"])
    pretrain_video_llava(config, tmp_path / "m", progress=False)
    train = {str(r.path) for r in read_pretrain_rows(small_config.data.root, "train")}
    others = {str(r.path) for s in ("val", "test") for r in read_pretrain_rows(small_config.data.root, s)}
    assert set(opened) == train
    assert not set(opened) & others


def test_pretraining_is_deterministic_and_resumes_exactly(small_config, tmp_path, monkeypatch):
    config = apply_overrides(small_config, ["pretrain.steps=6", "pretrain.eval_every=3"])
    whole = pretrain_video_llava(config, tmp_path / "whole", progress=False)
    again = pretrain_video_llava(config, tmp_path / "again", progress=False)
    reference = load_file(whole.out_dir / "model.safetensors")
    for name, tensor in load_file(again.out_dir / "model.safetensors").items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=0)

    # Interrupt after the step-3 state is saved, then run the same command again.
    calls = {"n": 0}
    real = pretrain_module._Batcher.batch

    def interrupted(self, rows, *args, **kwargs):
        calls["n"] += len(rows) == 8  # training batches (evaluation takes the 13 held-out videos at once)
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, rows, *args, **kwargs)

    monkeypatch.setattr(pretrain_module._Batcher, "batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pretrain_video_llava(config, tmp_path / "resumed", progress=False)
    assert (tmp_path / ".resumed.pretrain-state.pt").is_file()
    assert not (tmp_path / "resumed").exists()
    monkeypatch.setattr(pretrain_module._Batcher, "batch", real)
    resumed = pretrain_video_llava(config, tmp_path / "resumed", progress=False)
    assert [h["step"] for h in resumed.history] == list(range(1, 7))
    for name, tensor in load_file(resumed.out_dir / "model.safetensors").items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=0)
    assert not (tmp_path / ".resumed.pretrain-state.pt").exists()


def test_evaluation_scores_a_perfect_answer_key_as_exact(pretrained, small_config):
    """The metric's oracle: a model that always predicts the right next token scores 100 %."""
    rows = read_pretrain_rows(small_config.data.root, "train")[:3]
    backend = create_backend("video-llava", model=str(pretrained.out_dir))
    batcher = pretrain_module._Batcher(backend, "temporal", 8)

    class Oracle(torch.nn.Module):
        def forward(self, input_ids, attention_mask, pixel_values_videos):
            logits = torch.full((*input_ids.shape, len(backend.tokenizer)), -10.0)
            logits[:, :-1].scatter_(2, input_ids[:, 1:, None], 10.0)  # predicts the true next token
            return type("Out", (), {"logits": logits})()

    frames = np.zeros((3, 8, 32, 32, 3), dtype=np.uint8)
    metrics = evaluate_pretrained(Oracle(), batcher, rows, frames, ["query-label", "support-caption"])
    assert metrics["query-label/exact"] == 1.0
    assert metrics["support-caption/token_acc"] == 1.0
    assert metrics["loss"] < 1e-6


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pretrain.tasks=['query-label', 'describe']", "pretrain.tasks"),
        ("pretrain.steps=0", "pretrain.steps"),
        ("pretrain.val_fraction=1.0", "pretrain.val_fraction"),
        ("pretrain.patch_size=7", "patch_size"),
        ("data.format='csv'", "data.format"),
    ],
)
def test_bad_settings_are_named(small_config, tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        pretrain_video_llava(apply_overrides(small_config, [override]), tmp_path / "m", progress=False)


def test_retraining_into_a_model_folder_keeps_the_files_the_command_does_not_write(small_config, tmp_path):
    config = apply_overrides(small_config, ["pretrain.steps=1", "pretrain.eval_every=1"])
    out = pretrain_video_llava(config, tmp_path / "m", progress=False).out_dir
    (out / "reproduction.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"stale")
    pretrain_video_llava(config, out, progress=False)
    assert (out / "reproduction.json").read_text() == "{}"
    assert (out / "model.safetensors").stat().st_size > 100_000  # rewritten
    assert not list(tmp_path.glob(".m.*"))  # no staging or old folder left behind


def test_a_folder_that_is_not_a_model_is_not_overwritten(small_config, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    config = apply_overrides(small_config, ["pretrain.steps=1", "pretrain.eval_every=1"])
    with pytest.raises(FileExistsError, match="not a pretrained model folder"):
        pretrain_video_llava(config, out, progress=False)
    assert (out / "notes.txt").read_text() == "keep me"


SHIPPED = "tiny-video-llava-synthetic-actions"


def _shipped_folder():
    from fsar_train import builtin_model

    return builtin_model(SHIPPED)[0]


def test_the_shipped_model_records_how_it_was_made():
    folder = _shipped_folder()
    info = json.loads((folder / "pretrain.json").read_text())
    assert info["command"].startswith("fsar-train pretrain --preset synthetic-actions-llava")
    assert info["splits_read"] == ["train"]
    assert info["seconds"] <= 600  # the budget: at most 10 minutes on 2 CPU cores
    import hashlib

    assert info["weights_sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert (folder / "model.safetensors").stat().st_size < 5_000_000
    assert set(info["held_out_metrics"]) >= {"loss", "query-label/exact", "support-caption/token_acc"}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, "5157041bd25ef8d9"),
        (
            {"hidden_size": 32, "vision_hidden_size": 16, "image_size": 16, "patch_size": 4, "n_frames": 4, "seed": 7},
            "5d4b9c2e288901a6",
        ),
    ],
)
def test_the_model_to_pretrain_starts_from_the_same_weights(overrides, expected, state_hash):
    """Hashes computed when pretraining built the model itself from the private Video-LLaVA module;
    it now asks fsar-features' public ``tiny_backend``: the starting weights (and so the shipped
    model's reproduction) are the same."""
    from fsar_train._config import PretrainConfig

    config = PretrainConfig(**overrides)
    model, backend = pretrain_module._build(config, ["moving", "something", "up", "USER: ASSISTANT:"])
    assert state_hash(model) == expected
    assert model.training
    assert all(p.requires_grad for p in model.parameters())
    assert model.config.video_seq_length == config.n_frames * backend.tokens_per_frame
    assert (backend.name, backend.model_id, backend.family, backend.has_cls) == (
        "video-llava",
        "pretraining",
        "video-llava",
        True,
    )
    assert (backend.frame_size, backend.crop_size) == (config.image_size, config.image_size)


def test_the_shipped_model_opens_with_the_weights_it_has(state_hash):
    backend = create_backend("video-llava", model=_shipped_folder(), device="cpu")
    assert state_hash(backend.model) == "ed787a97b2912062"
    assert (backend.tokens_per_frame, backend.has_cls, backend.n_layers, backend.hidden_size) == (17, True, 2, 64)


def test_the_pretrain_command_reproduces_the_recorded_short_schedule(tmp_path):
    """The shipped folder's reproduction.json holds a short schedule of the same command and what it
    measured; running it again must give a model of the same quality (loss and accuracies within
    the recorded tolerance; on the machine that wrote it, the same numbers)."""
    from fsar_train.cli import main

    reference = json.loads((_shipped_folder() / "reproduction.json").read_text())
    overrides = [o.replace("{data}", str(tmp_path / "data")) for o in reference["overrides"]]
    argv = ["-q", "pretrain", "--preset", "synthetic-actions-llava", "--out", str(tmp_path / "model")]
    assert main([*argv, *(x for o in overrides for x in ("-o", o))]) == 0
    measured = json.loads((tmp_path / "model" / "pretrain.json").read_text())["held_out_metrics"]
    tolerance = reference["tolerance"]
    for key, expected in reference["held_out_metrics"].items():
        allowed = tolerance["loss"] if key.endswith("loss") else tolerance["accuracy"]
        assert measured[key] == pytest.approx(expected, abs=allowed), key


@pytest.mark.slow
def test_the_shipped_model_is_reproduced_by_its_command(tmp_path):
    """The full schedule (about 10 minutes on 2 cores) against the shipped held-out metrics."""
    import shlex

    from fsar_train.cli import main

    info = json.loads((_shipped_folder() / "pretrain.json").read_text())
    argv = shlex.split(info["command"])[1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "model")
    threads = torch.get_num_threads()
    torch.set_num_threads(info["machine"]["threads"])  # as shipped (the test session runs on one thread)
    try:
        assert main(["-q", *argv]) == 0
    finally:
        torch.set_num_threads(threads)
    measured = json.loads((tmp_path / "model" / "pretrain.json").read_text())["held_out_metrics"]
    for key, expected in info["held_out_metrics"].items():
        assert measured[key] == pytest.approx(expected, abs=0.02 if key.endswith("loss") else 0.03), key


def test_mirroring_never_trains_on_a_held_out_combination(small_config, tmp_path, monkeypatch):
    from fsar_train._pretrain import mirror_text
    from fsar_train._synthetic import synthetic_classes

    assert mirror_text("moving something clockwise and back") == "moving something counterclockwise and back"
    assert mirror_text("something falling down") == "something falling down"
    seen = []
    real = pretrain_module._Batcher.batch

    def spy(self, rows, tasks, frames):
        if len(rows) == 8:  # training batches (evaluation batches hold the held-out videos)
            seen.extend((r.video_id, r.label, f.copy()) for r, f in zip(rows, frames, strict=True))
        return real(self, rows, tasks, frames)

    monkeypatch.setattr(pretrain_module._Batcher, "batch", spy)
    config = apply_overrides(small_config, ["pretrain.steps=8", "pretrain.eval_every=8", "pretrain.mirror=true"])
    pretrain_video_llava(config, tmp_path / "m", progress=False)
    train_classes = {c.name for c in synthetic_classes() if c.split == "train"}
    assert {label for _, label, _ in seen} <= train_classes
    rows = {r.video_id: r for r in read_pretrain_rows(small_config.data.root, "train")}
    mirrored = [(v, f) for v, label, f in seen if label != rows[v].label]
    assert mirrored  # some videos were mirrored ...
    for video_id, frames in mirrored[:3]:  # ... and their frames with them
        original = read_frames(rows[video_id].path, 8, size=32).frames
        np.testing.assert_array_equal(frames, original[:, :, ::-1])


class _Planted:
    """A pickle that runs code when loaded unsafely (it would create ``marker``)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_resume_state_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "planted-code-ran"
    state = tmp_path / ".model.pretrain-state.pt"
    torch.save({"model": {}, "optimizer": {}, "scheduler": {}, "step": 1, "payload": _Planted(marker)}, state)
    with pytest.raises(ValueError, match=r"is not a pretraining state this command wrote .*delete it to start over"):
        pretrain_module.load_pretrain_state(state)
    assert not marker.exists()
    state.write_bytes(b"\x80\x02truncated")  # a torn file reads as the same clear error
    with pytest.raises(ValueError, match="is not a pretraining state this command wrote"):
        pretrain_module.load_pretrain_state(state)


def test_a_saved_resume_state_loads_safely(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(1, 2)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    config = pretrain_module._fingerprint(ExperimentConfig())
    state = {
        "fingerprint": config,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "history": [{"step": 1, "loss": 0.5}],
        "val_history": [],
        "step": 1,
    }
    torch.save(state, tmp_path / "state.pt")
    loaded = pretrain_module.load_pretrain_state(tmp_path / "state.pt")
    assert loaded["fingerprint"] == config
    assert torch.equal(loaded["model"]["weight"], model.state_dict()["weight"])


# ----------------------------------------------------------------------------- motion-only answer tasks

MOTION_TASKS = ["query-label", "support-caption", "query-direction", "query-manner"]


def test_every_class_has_motion_answers_and_a_product_class_is_named_by_them():
    from fsar_train._pretrain import motion_answers
    from fsar_train._synthetic import synthetic_classes

    manners: dict[str, set[str]] = {}
    for cls in synthetic_classes():
        direction, manner = motion_answers(cls.manner, cls.direction, cls.behaviour)
        assert direction, cls.name
        assert manner, cls.name
        if not cls.behaviour:
            assert direction in cls.name, cls.name  # the path's words are the class name's
            manners.setdefault(cls.manner, set()).add(manner)
    # One answer per manner, and different manners get different answers.
    assert all(len(answers) == 1 for answers in manners.values())
    assert len({next(iter(a)) for a in manners.values()}) == len(manners) == 5
    with pytest.raises(ValueError, match=r"manner='sliding'.*manners \['back'"):
        motion_answers("sliding", "up", "")


def test_rows_carry_the_motion_answers_and_a_mirror_swaps_the_direction(small_config):
    from fsar_train._pretrain import mirror_row

    rows = read_pretrain_rows(small_config.data.root, "train")
    right = next(r for r in rows if r.label == "moving something from left to right")
    assert (right.direction, right.manner) == ("from left to right", "at a steady speed")
    mirrored = mirror_row(right)
    assert (mirrored.label, mirrored.direction, mirrored.manner) == (
        "moving something from right to left",
        "from right to left",
        "at a steady speed",
    )
    up = next(r for r in rows if r.label.startswith("pushing something up"))
    assert mirror_row(up).direction == "up"


def test_motion_words_join_the_tokenizer_only_when_their_tasks_are_trained(small_config):
    from fsar_train._pretrain import pretrain_vocabulary

    rows = read_pretrain_rows(small_config.data.root, "train")
    plain = pretrain_vocabulary(rows, "temporal")
    assert pretrain_vocabulary(rows, "temporal", ["query-label", "support-caption"]) == plain
    words = " ".join(pretrain_vocabulary(rows, "temporal", MOTION_TASKS))
    assert "Which way does the object move?" in words
    assert "there and back" in words
    assert "Which way" not in " ".join(plain)


def test_a_motion_task_asks_its_own_question_and_trains_on_the_answer_alone(pretrained, small_config):
    rows = read_pretrain_rows(small_config.data.root, "train")
    backend = create_backend("video-llava", model=str(pretrained.out_dir))
    batcher = pretrain_module._Batcher(backend, "temporal", 8)
    row = next(r for r in rows if r.manner == "there and back")
    ids, target = batcher.sequence(row, "query-direction")
    text = backend.tokenizer.decode(ids)
    assert "Which way does the object move? Answer with the direction." in text
    assert "What is the person doing" not in text
    answer = backend.tokenizer.decode([t for t in target if t != pretrain_module.IGNORE], skip_special_tokens=True)
    assert answer == row.direction
    assert row.direction in row.label
    ids, target = batcher.sequence(row, "query-manner")
    assert "How does the object move over time?" in backend.tokenizer.decode(ids)
    answer = backend.tokenizer.decode([t for t in target if t != pretrain_module.IGNORE], skip_special_tokens=True)
    assert answer.split() == ["there", "and", "back"]


def test_pretraining_with_the_motion_tasks_reports_each_task(small_config, tmp_path):
    config = apply_overrides(
        small_config, [f"pretrain.tasks={MOTION_TASKS!r}", "pretrain.steps=4", "pretrain.eval_every=4"]
    )
    result = pretrain_video_llava(config, tmp_path / "m", progress=False)
    for task in MOTION_TASKS:
        assert 0.0 <= result.metrics[f"{task}/token_acc"] <= 1.0, task
        assert np.isfinite(result.metrics[f"{task}/loss"]), task
    info = json.loads((tmp_path / "m" / "pretrain.json").read_text())
    assert info["tasks"] == MOTION_TASKS
    # The trained tokenizer knows the questions' words as single tokens.
    backend = create_backend("video-llava", model=str(tmp_path / "m"))
    assert len(backend.tokenizer(" Which", add_special_tokens=False).input_ids) == 1
