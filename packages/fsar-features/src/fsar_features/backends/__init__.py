"""Feature backends, one model family per file; importing this package registers them."""

from fsar_features.backends import llava_next_video, video_llava
from fsar_features.backends._hf import HFVideoBackend, build_tiny_tokenizer, build_word_tokenizer

__all__ = ["HFVideoBackend", "build_tiny_tokenizer", "build_word_tokenizer", "llava_next_video", "video_llava"]
