"""The real-benchmark path end to end, offline: a mini HMDB51 in both public split layouts, a checkpoint
folder with the real 7B models' geometry passed by ``--model``, through extraction → the FSAR-LLaVA
head and the baselines → evaluation → the prototype store, as ``uv run apps/train`` runs it.

The mini benchmark uses real HMDB51 class names (the first five of each split, in the public index
order) and real split-file line formats; its videos are short synthetic clips. Both layouts name the
same files, so they must give the same classes, the same episodes and the same accuracies.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

N_CLASSES, N_VIDEOS = 5, 3  # per split: a 5-way task with 1 shot + 1 query and one spare video per class
FAST = [
    "--device", "cpu",
    "-o", "features.progress=false",
    "-o", "features.batch_size=4",
    "-o", "train.steps=2",
    "-o", "train.episodes_per_step=2",
    "-o", "train.val_every=2",
    "-o", "train.val_episodes=4",
    "-o", "train.checkpoint_every=2",
    "-o", "train.warmup_steps=1",
    "-o", "episodes.train_queries=1",
    "-o", "eval.episodes=12",
    "-o", "eval.shots=[1]",
]  # fmt: skip


def _write_clip(path: Path, seed: int) -> None:
    """A 16-frame 64×48 clip (MPEG-4 in AVI, as HMDB51 ships): a square moving across a changing background."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        colour = rng.integers(64, 256, size=3, dtype=np.uint8)
        for i in range(16):
            frame = np.full((48, 64, 3), (9 * i + 40 * seed) % 200, np.uint8)
            x = (seed * 7 + 3 * i) % 48
            frame[16:32, x : x + 16] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def mini_hmdb51(tmp_path_factory) -> dict[str, Path]:
    """Videos under ``root/videos/<class>/``, split lists in TRX's and CLIP-FSAR's layouts."""
    from fsar_train import shipped_class_names

    base = tmp_path_factory.mktemp("hmdb51")
    root, trx, clip = base / "data", base / "splits" / "hmdb_ARN", base / "splits" / "hmdb51-clip-fsar"
    trx.mkdir(parents=True)
    clip.mkdir(parents=True)
    seed = 0
    for split, trx_name in (("train", "trainlist03.txt"), ("val", "vallist03.txt"), ("test", "testlist03.txt")):
        names = shipped_class_names("hmdb51", split)
        assert names is not None
        trx_lines, clip_lines = [], []
        for index, name in enumerate(names[:N_CLASSES]):
            for v in range(N_VIDEOS):
                stem = f"{name}_clip_{split}_{v}"
                _write_clip(root / "videos" / name / f"{stem}.avi", seed)
                seed += 1
                trx_lines.append(f"{name}/{stem}")
                clip_lines.append(f"{split}{index}//videos/{name}/{stem}.avi")
        (trx / trx_name).write_text("\n".join(trx_lines) + "\n")
        (clip / f"{split}_few_shot.txt").write_text("\n".join(clip_lines) + "\n")
    return {"root": root, "trx": trx, "clip-fsar": clip, "base": base}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    from fsar_features import save_tiny_checkpoint

    base = tmp_path_factory.mktemp("checkpoints")
    return {family: save_tiny_checkpoint(family, base / family) for family in ("video-llava", "llava-next-video")}


def _run(mini: dict[str, Path], checkpoint: Path, layout: str, run_dir: Path) -> int:
    from fsar_apps.cli import main

    return main(
        [
            "--benchmark", "hmdb51",
            "--data-root", str(mini["root"]),
            "--split-dir", str(mini[layout]),
            "--model", str(checkpoint),
            "--run-dir", str(run_dir),
            *FAST,
        ]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("family", "tokens_per_frame"),
    [("video-llava", 257), ("llava-next-video", 144)],  # CLS + 16², and the 24² grid pooled by 2
)
def test_a_public_benchmark_with_a_checkpoint_folder_trains_evaluates_and_stores_fsar_llava(
    mini_hmdb51, checkpoints, tmp_path, family, tokens_per_frame, capsys
):
    from fsar_apps.store import PrototypeStore
    from fsar_features import FeatureCache, create_backend
    from fsar_train import backend_kwargs, load_config, mllm_cache_dir, resolve_backend

    run_dir = tmp_path / "run"
    assert _run(mini_hmdb51, checkpoints[family], "clip-fsar", run_dir) == 0
    config = load_config(run_dir / "config.toml")
    assert (config.metric.name, config.data.benchmark, config.features.backend) == ("fsar_llava", "hmdb51", "auto")
    assert resolve_backend(config) == family  # read from the checkpoint's config.json

    # The features have the real model's geometry: T = 8 frames of V tokens each.
    backend = create_backend(resolve_backend(config), **backend_kwargs(config))
    assert backend.tokens_per_frame == tokens_per_frame
    assert backend.crop_size == (224 if family == "video-llava" else 336)
    from fsar_prompts import render_prompt, scenario_for

    scenario = scenario_for("hmdb51")
    ids = backend.tokenize(render_prompt(family, "query", scenario), 8)
    assert sum(i == backend.video_token_id for i in ids) == 8 * tokens_per_frame  # 2,056 for Video-LLaVA
    cache = FeatureCache.open(mllm_cache_dir(config))
    assert len(cache) == 3 * N_CLASSES * N_VIDEOS
    assert cache.visual(cache.video_ids[:1]).shape == (1, 8, 64)
    # Label-aware support text carries the real class name (index 0 of the test list is "fencing").
    test_entry = next(cache.entry(v) for v in cache.video_ids if v.startswith("fencing_clip_test"))
    assert test_entry.label == "fencing"
    assert test_entry.prompt_ids["support"] == render_prompt(family, "support", scenario, label="fencing").id

    results = json.loads((run_dir / "results.json").read_text())
    methods = results["results"]["1"]
    assert list(methods) == [
        "fsar_llava",
        "fsar_llava (visual only)",
        "fsar_llava (text only)",
        "fsar_llava (with cross)",
        "proto",
        "otam",
        "bimhm",
        "trx",
    ]
    assert methods["fsar_llava"]["uses_class_names"]
    assert set(results["trained"]) == {"fsar_llava", "trx"}
    assert all(len(m["episode_accuracies"]) == 12 for m in methods.values())
    store = PrototypeStore.open(run_dir / "store")
    assert sorted(a.action for a in store.list()) == ["fencing", "kick", "kick_ball", "pick", "pour"]
    assert "prototype store: 5 meta-test actions" in " ".join(capsys.readouterr().out.split())


def test_both_public_split_layouts_give_the_same_classes_episodes_and_accuracies(mini_hmdb51, checkpoints, tmp_path):
    runs = {}
    for layout in ("trx", "clip-fsar"):
        assert _run(mini_hmdb51, checkpoints["video-llava"], layout, tmp_path / layout) == 0
        runs[layout] = json.loads((tmp_path / layout / "results.json").read_text())
    trx, clip = runs["trx"]["results"]["1"], runs["clip-fsar"]["results"]["1"]
    assert list(trx) == list(clip)
    for method in trx:
        assert trx[method]["per_class_accuracy"].keys() == clip[method]["per_class_accuracy"].keys()
        assert trx[method]["episode_accuracies"] == clip[method]["episode_accuracies"], method
    episodes = {layout: (tmp_path / layout / "test_episodes_5way_1shot_12_seed0.json").read_bytes() for layout in runs}
    assert episodes["trx"] == episodes["clip-fsar"]


def test_a_split_folder_without_the_lists_is_one_clear_error(mini_hmdb51, checkpoints, tmp_path, capsys):
    from fsar_apps.cli import main

    empty = tmp_path / "splits"
    empty.mkdir()
    status = main(["--benchmark", "hmdb51", "--split-dir", str(empty), "--model", str(checkpoints["video-llava"])])
    assert status == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "trainlist03.txt" in err
    assert "train_few_shot.txt" in err
    assert "Traceback" not in err


def test_an_unsupported_checkpoint_type_is_a_clear_error_that_names_the_backend_option(mini_hmdb51, tmp_path, capsys):
    from fsar_apps.cli import main

    odd = tmp_path / "odd-model"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    argv = ["--benchmark", "hmdb51", "--data-root", str(mini_hmdb51["root"]), "--split-dir", str(mini_hmdb51["trx"])]
    status = main([*argv, "--model", str(odd), "--run-dir", str(tmp_path / "run"), *FAST, "extract"])
    assert status == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "qwen2_vl" in err
    assert "--backend" in err
