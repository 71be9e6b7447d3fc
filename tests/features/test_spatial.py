"""Resize + centre crop matches transformers' CLIP image processor, and is the same for every frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import VideoLlavaImageProcessor

from fsar_features import resize_and_center_crop
from fsar_features.backends._hf import CLIP_MEAN, CLIP_STD


@pytest.mark.parametrize(("height", "width"), [(48, 64), (64, 48), (37, 91), (32, 32)])
def test_resize_and_crop_equals_the_video_llava_image_processor(height: int, width: int) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    processor = VideoLlavaImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 24, "width": 24}, image_mean=CLIP_MEAN, image_std=CLIP_STD
    )
    reference = processor(images=list(frames), return_tensors="pt", return_legacy_image_output=False)["pixel_values"]
    ours = torch.from_numpy(resize_and_center_crop(frames, 32, 24)).float() / 255.0  # [T, 24, 24, 3]
    ours = ((ours - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)).permute(0, 3, 1, 2)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_every_frame_of_a_clip_gets_the_same_crop() -> None:
    frame = np.random.default_rng(1).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    out = resize_and_center_crop(np.stack([frame] * 4), 32)
    assert out.shape == (4, 32, 32, 3)
    assert all(np.array_equal(out[0], f) for f in out)


def test_crop_larger_than_size_and_non_uint8_frames_are_refused() -> None:
    with pytest.raises(ValueError, match="crop must be in"):
        resize_and_center_crop(np.zeros((1, 8, 8, 3), np.uint8), 8, 9)
    with pytest.raises(ValueError, match=r"uint8 \[T, H, W, 3\]"):
        resize_and_center_crop(np.zeros((1, 8, 8, 3), np.float32), 8)
