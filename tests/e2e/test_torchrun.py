"""The torchrun paths, run for real on the CPU: sharded extraction and data-parallel training (gloo).

Each test launches ``torchrun --standalone --nproc-per-node 2`` (rendezvous on localhost; gloo is
told to use the loopback interface) and one plain process on the same inputs, and compares what
they leave on disk. Subprocesses get one OpenMP thread each: the machines these run on have few cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from fsar_features import FeatureCache, shard_of

TORCHRUN = Path(sys.executable).parent / "torchrun"


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo connects over loopback only, whatever the hostname resolves to
    return env


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    return done


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", *args], cwd)


def _write_video(path: Path, n_frames: int, seed: int) -> None:
    """A moving square over a background that changes every frame (64×48 H.264)."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(64, 256, size=3, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(n_frames):
            image = np.full((48, 64, 3), (7 * i + 11 * seed) % 200, np.uint8)
            x = 52 * i // max(1, n_frames - 1)
            image[16:28, x : x + 12] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_torchrun_extraction_fills_one_cache_equal_to_a_single_process_run(tmp_path):
    videos = tmp_path / "videos"
    names = [*(f"{c}/{c}{k}" for c in ("jump", "wave") for k in range(3)), "free0", "free1"]  # two without a label
    for seed, name in enumerate(names):
        _write_video(videos / f"{name}.mp4", 16 + 3 * seed, seed)
    assert {shard_of(name, 2) for name in names} == {0, 1}, "both ranks must get videos"
    # float32 storage, so the comparison sees the model's numbers rather than fp16 rounding.
    options = ["--backend", "tiny-video-llava", "--storage-dtype", "float32", "--batch-size", "4", "--no-progress"]
    _torchrun("-m", "fsar_features", "extract", str(videos), str(tmp_path / "sharded"), *options, cwd=tmp_path)
    _run([sys.executable, "-m", "fsar_features", "extract", str(videos), str(tmp_path / "single"), *options], tmp_path)

    sharded, single = FeatureCache.open(tmp_path / "sharded"), FeatureCache.open(tmp_path / "single")
    assert sharded.recipe == single.recipe
    assert sorted(sharded.video_ids) == sorted(single.video_ids) == sorted(names)
    writers = {p.name.split("-")[0] for p in (tmp_path / "sharded" / "manifest").glob("*.json")}
    assert writers == {"r00000of00002", "r00001of00002"}, f"fragments by {writers}"
    for name in names:
        entry = sharded.entry(name)
        assert entry.shard.split("/")[-1].startswith(f"r{shard_of(name, 2):05d}of00002"), entry.shard
    ids = sorted(names)
    # The ranks batch other videos together than the single process (7 + 1 against 8), and a row's
    # numbers depend on its batch only through kernel noise: the tolerance of
    # tests/features/test_extract.py for batched against one-by-one extraction.
    torch.testing.assert_close(sharded.visual(ids), single.visual(ids), atol=1e-5, rtol=1e-5)
    for role in ("query", "support"):
        with_role = [v for v in ids if role == "query" or "/" in v]
        torch.testing.assert_close(sharded.text(with_role, role), single.text(with_role, role), atol=1e-5, rtol=1e-5)


# Trains `metric` for 4 steps of B = 4 episodes on fixed random features, from weights built before
# `train` (so the test can read every step's gradients), and saves what it has at the end.
TRAIN_DRIVER = """
import os
import sys
from pathlib import Path

import torch

from fsar_train import ExperimentConfig, TensorFeatures, apply_overrides, build_metric, train

torch.set_num_threads(1)
name, run_dir = sys.argv[1], Path(sys.argv[2])


def task(seed, n_classes=6, per_class=6, dim=24):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, dim, generator=gen)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    visual = centres[labels][:, None] + torch.randn(len(labels), 4, dim, generator=gen)  # [V, T, D]
    text = [centres[labels] + 0.3 * torch.randn(len(labels), dim, generator=gen) for _ in range(2)]  # [V, D]
    return TensorFeatures(visual, labels, label_aware_text=text[0], label_free_text=text[1])


options = {
    "trx": ["metric.options.key_dim=8", "metric.options.cardinalities=[2]"],
    "fsar_llava": ["metric.options.dim=16", "metric.options.n_frames=4", "metric.options.n_heads=2"],
}[name]
config = apply_overrides(ExperimentConfig(), [
    f"metric.name={name}", *options, "episodes.n_way=3", "episodes.n_shot=1", "episodes.train_queries=2",
    "train.steps=4", "train.episodes_per_step=4", "train.lr=3e-3", "train.warmup_steps=1", "train.val_every=2",
    "train.val_episodes=10", "train.checkpoint_every=2", "train.device=cpu",
])
torch.manual_seed(config.train.seed)
metric = build_metric(config, 24)
grads = []


def keep_grads(step, logged):
    grads.append({n: p.grad.clone() for n, p in metric.named_parameters() if p.grad is not None})


result = train(config, task(1), task(2), run_dir, metric=metric, progress=False, on_step=keep_grads)
torch.save(
    {"model": result.metric.state_dict(), "grads": grads, "history": result.history, "val": result.val_history,
     "best": [result.best_step, result.best_accuracy]},
    run_dir / f"result-rank{os.environ.get('RANK', '0')}.pt",
)
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
"""


@pytest.mark.parametrize("name", ["trx", "fsar_llava"])
def test_data_parallel_training_on_two_ranks_equals_one_process_on_the_same_global_batch(tmp_path, name):
    """Both metrics use dropout (0.1), so the masks must follow the episode, not the rank."""
    driver = tmp_path / "driver.py"
    driver.write_text(TRAIN_DRIVER)
    _torchrun(str(driver), name, str(tmp_path / "two"), cwd=tmp_path)
    _run([sys.executable, str(driver), name, str(tmp_path / "one")], tmp_path)
    one, two, two_r1 = (
        torch.load(tmp_path / run / f"result-rank{r}.pt", weights_only=True)
        for run, r in (("one", 0), ("two", 0), ("two", 1))
    )

    # DDP keeps the replicas identical, and every rank returns rank 0's validation results.
    for key, weight in two["model"].items():
        assert torch.equal(weight, two_r1["model"][key]), f"{key} differs between the ranks"
    assert two_r1["val"] == two["val"]
    assert two_r1["best"] == two["best"]
    assert two_r1["history"] == two["history"]

    # The same global batch gives the same gradient: each rank divides by its B / 2 episodes and DDP
    # averages the two ranks, one process divides by B. Only the float32 summation order differs
    # (observed ≤ 1e-7 on gradients of order 0.01 … 1), so 1e-6 is ten times the noise.
    assert len(one["grads"]) == len(two["grads"]) == 4
    for step, (g1, g2) in enumerate(zip(one["grads"], two["grads"], strict=True)):
        assert g1.keys() == g2.keys()
        for key in g1:
            torch.testing.assert_close(g2[key], g1[key], atol=1e-6, rtol=1e-5, msg=f"step {step + 1}, {key}")
    for h1, h2 in zip(one["history"], two["history"], strict=True):
        assert h1.keys() == h2.keys()
        for key in h1:
            assert h2[key] == pytest.approx(h1[key], rel=1e-5, abs=1e-6), f"step {h1['step']}: {key}"
    assert two["val"] == one["val"]
    assert two["best"] == one["best"]

    # Weights: AdamW divides each gradient by its own running RMS, so an entry whose gradient is
    # zero in exact arithmetic (an attention key bias: softmax ignores a shift; TRX's value bias
    # cancels in query - prototype) moves by about ±lr per step on rounding noise of 1e-8, a
    # different noise in each run. Those entries (|grad| < 1e-6 at every step) may differ by up to
    # 2·Σ lr; every entry with a real gradient must agree to 1e-6 (observed ≤ 1e-7).
    lr_sum = sum(h["lr"] for h in one["history"])
    for key, w1 in one["model"].items():
        w2 = two["model"][key]
        if key not in one["grads"][0]:
            assert torch.equal(w1, w2), key  # buffers and frozen parameters
            continue
        signal = torch.stack([g[key].abs() for g in one["grads"]]).amax(0) >= 1e-6
        torch.testing.assert_close(w2[signal], w1[signal], atol=1e-6, rtol=1e-5, msg=key)
        assert bool(((w2 - w1)[~signal].abs() <= 2 * lr_sum).all()), key
