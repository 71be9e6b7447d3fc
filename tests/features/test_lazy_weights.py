"""The checkpoint backends read config, tokenizer and processor settings at creation and load the
weights on first use: a run whose videos are all cached never loads them, and lazily loaded weights
give the features an eager construction gives."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, LlavaNextVideoForConditionalGeneration, VideoLlavaForConditionalGeneration

from fsar_features import (
    ExtractionConfig,
    FeatureCache,
    FeatureExtractor,
    VideoItem,
    create_backend,
    extract_features,
    save_tiny_checkpoint,
)
from fsar_features.backends import VIDEO_LLAVA, HFVideoBackend, seeded_init
from fsar_features.backends import _hf as hf
from fsar_features.backends._hf import read_preprocessing

# 2 frames keep the real geometry's 257 tokens per frame cheap on a CPU.
CONFIG = ExtractionConfig(n_frames=2, batch_size=2, storage_dtype="float32")
CLASSES = {
    "video-llava": VideoLlavaForConditionalGeneration,
    "llava-next-video": LlavaNextVideoForConditionalGeneration,
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lazy")
    return {family: save_tiny_checkpoint(family, root / family) for family in CLASSES}


@pytest.fixture
def items(make_video: Callable[..., Path]) -> list[VideoItem]:
    labels = ["jumping jacks", None, "waving"]
    return [VideoItem(f"v{k}", make_video(f"v{k}.mp4", 12 + 4 * k, seed=k), labels[k]) for k in range(3)]


def _count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[tuple]:
    """Replace ``owner.name`` with a wrapper that records each call and then calls the original."""
    calls: list[tuple] = []
    original = getattr(owner, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


def _eager(folder: Path, *, random_init_seed: int | None = None) -> HFVideoBackend:
    """``video-llava`` as it was built before weights loaded lazily, spelled out with transformers
    (independent of the lazy code): model first, then the backend."""
    from transformers import AutoTokenizer

    if random_init_seed is None:
        model = VideoLlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
        model_id = str(folder)
    else:
        config = AutoConfig.from_pretrained(folder)
        model = seeded_init(lambda: VideoLlavaForConditionalGeneration(config), random_init_seed).to(torch.float32)
        model_id = f"{folder}+random-init(seed={random_init_seed})"
    tokenizer, processor_folder = AutoTokenizer.from_pretrained(folder), folder
    return HFVideoBackend(
        name="video-llava",
        model=model,
        tokenizer=tokenizer,
        model_id=model_id,
        family="video-llava",
        tokens_per_frame=VIDEO_LLAVA.tokens_per_frame(model.config),
        has_cls=True,
        preprocessing=read_preprocessing(processor_folder, model.config.vision_config.image_size),
    )


def _features(cache_dir: Path) -> dict[str, bytes]:
    """Every tensor of a cache as bytes, keyed by kind and video."""
    cache = FeatureCache.open(cache_dir)
    ids = cache.video_ids
    out = {f"visual/{v}": cache.visual([v]).numpy().tobytes() for v in ids}
    out |= {f"query/{v}": cache.text([v], role="query").numpy().tobytes() for v in ids}
    labelled = [v for v in ids if cache.labels[v] is not None]
    out |= {f"support/{v}": cache.text([v], role="support").numpy().tobytes() for v in labelled}
    return out


@pytest.mark.parametrize("family", sorted(CLASSES))
def test_creating_a_backend_reads_the_config_and_the_first_use_loads_once(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch, family: str
) -> None:
    calls = _count_calls(monkeypatch, CLASSES[family], "from_pretrained")
    backend = create_backend(family, model=str(checkpoints[family]), device="cpu")
    extractor = FeatureExtractor(backend, CONFIG)  # recipe, prompts, tokenising: no weights
    assert extractor.recipe.dim == 64
    assert sorted(extractor.prompt_ids("waving")) == ["query", "support"]
    assert (calls, backend.weights_loaded) == ([], False)
    assert (backend.n_layers, backend.hidden_size, backend.device, backend.dtype) == (
        2,
        64,
        torch.device("cpu"),
        torch.float32,
    )
    model = backend.model
    assert (len(calls), backend.weights_loaded) == (1, True)
    assert backend.model is model
    assert len(calls) == 1
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.config.get_text_config().hidden_size == backend.hidden_size


def test_a_complete_cache_never_loads_the_weights_and_matches_eager_features(
    tmp_path: Path, checkpoints: dict[str, Path], items: list[VideoItem], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = str(checkpoints["video-llava"])
    kwargs = {"backend": "video-llava", "config": CONFIG, "progress": False, "decode_workers": 0}
    calls = _count_calls(monkeypatch, VideoLlavaForConditionalGeneration, "from_pretrained")
    first = extract_features(items, tmp_path / "lazy", backend_kwargs={"model": folder, "device": "cpu"}, **kwargs)
    assert (first.n_extracted, len(calls)) == (3, 1)  # the first real extraction loads exactly once
    again = extract_features(items, tmp_path / "lazy", backend_kwargs={"model": folder, "device": "cpu"}, **kwargs)
    assert (again.n_skipped, again.n_extracted, len(calls)) == (3, 0, 1)  # nothing to extract: no load

    eager = _eager(checkpoints["video-llava"])
    extract_features(items, tmp_path / "eager", eager, CONFIG, progress=False, decode_workers=0)
    assert FeatureCache.open(tmp_path / "lazy").recipe == FeatureCache.open(tmp_path / "eager").recipe
    assert _features(tmp_path / "lazy") == _features(tmp_path / "eager")


def test_random_init_weights_are_drawn_on_first_use_and_equal_the_eager_ones(
    checkpoints: dict[str, Path], make_video: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = checkpoints["video-llava"]
    calls = _count_calls(monkeypatch, hf, "seeded_init")
    lazy = create_backend("video-llava", model=folder, device="cpu", random_init_seed=0)
    assert (calls, lazy.model_id) == ([], f"{folder}+random-init(seed=0)")
    eager = _eager(folder, random_init_seed=0)
    assert lazy.model_id == eager.model_id
    video = make_video("v.mp4", 20)
    a = FeatureExtractor(lazy, CONFIG).extract(video, label="jump")
    assert len(calls) == 1
    b = FeatureExtractor(eager, CONFIG).extract(video, label="jump")
    assert torch.equal(a.visual, b.visual)
    assert all(torch.equal(a.text[r], b.text[r]) for r in b.text)
    lazy_params, eager_params = dict(lazy.model.named_parameters()), dict(eager.model.named_parameters())
    assert lazy_params.keys() == eager_params.keys()
    assert all(torch.equal(lazy_params[k], eager_params[k]) for k in lazy_params)


def test_bad_inputs_and_missing_weights_are_reported_without_loading(
    tmp_path: Path, checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_calls(monkeypatch, LlavaNextVideoForConditionalGeneration, "from_pretrained")
    backend = create_backend("llava-next-video", model=checkpoints["llava-next-video"], device="cpu")
    with pytest.raises(ValueError, match="visual pooling 'cls' needs a CLS token"):
        FeatureExtractor(backend, ExtractionConfig(n_frames=2, visual_pooling="cls"))
    with pytest.raises(ValueError, match="frames must be uint8"):
        backend.pixel_values(torch.zeros(1, 2, 8, 8, 3))
    assert (calls, backend.weights_loaded) == ([], False)

    # A folder with its config but without weights: created fine, and the first use names the folder.
    folder = shutil.copytree(checkpoints["video-llava"], tmp_path / "no-weights")
    (folder / "model.safetensors").unlink()
    lazy = create_backend("video-llava", model=folder, device="cpu")
    for _ in range(2):  # a failed load is not remembered as done
        with pytest.raises(FileNotFoundError, match=rf"cannot load the video-llava model '{folder}'"):
            _ = lazy.model


def test_an_eager_backend_takes_a_model_or_a_loader(checkpoints: dict[str, Path]) -> None:
    eager = _eager(checkpoints["video-llava"])
    assert eager.weights_loaded
    common = {
        "name": "video-llava",
        "tokenizer": eager.tokenizer,
        "model_id": "m",
        "family": "video-llava",
        "tokens_per_frame": eager.tokens_per_frame,
        "has_cls": True,
        "preprocessing": read_preprocessing(None, 224),
    }
    with pytest.raises(ValueError, match="either a model or a loader"):
        HFVideoBackend(**common)
    with pytest.raises(ValueError, match="either a model or a loader"):
        HFVideoBackend(model=eager.model, loader=lambda: eager.model, **common)
    with pytest.raises(ValueError, match="needs the model's config, device and dtype"):
        HFVideoBackend(loader=lambda: eager.model, **common)
