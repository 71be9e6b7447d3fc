"""Plumbing shared by the transformers LLaVA-family backends: one backend class, loading, tiny tokenizer.

A family's spec (``VideoFamily`` in ``_families.py``) supplies what differs: the model class, the
number of video tokens per frame (read from the config), whether each frame starts with a CLS token,
and the shape of its tiny variant.

Weights load lazily: ``open_pretrained`` reads only ``config.json``, the tokenizer and the processor
settings, which fix everything the cache recipe, the prompts and the label spans need; the backend
loads the weights on first use (a forward pass, ``pixel_values`` or ``.model``), once. A run whose
videos are all cached already therefore never loads them.

Preprocessing does not use transformers' video processors (they need torchvision): frames are
resized and centre-cropped by ``fsar_features._spatial`` exactly as the CLIP image processors do,
then rescaled and normalised here, which matches ``VideoLlavaImageProcessor`` per frame
(``tests/features/test_backends.py``).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from fsar_features._registry import BackendOutput
from fsar_features._spatial import resize_and_center_crop
from fsar_metric.errors import InputError, MissingFileError
from fsar_prompts import RenderedPrompt

if TYPE_CHECKING:  # transformers is imported where a model is built or opened: `import fsar_features` stays light
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "TINY_SPECIAL_TOKENS",
    "HFVideoBackend",
    "Preprocessing",
    "PretrainedParts",
    "build_tiny_tokenizer",
    "build_word_tokenizer",
    "default_device_dtype",
    "open_pretrained",
    "read_preprocessing",
    "seeded_init",
]

log = logging.getLogger(__name__)

#: OpenAI CLIP normalisation, the default of every CLIP-tower video MLLM here.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Special tokens of the tiny tokenizer, in id order (ids 0 … 5).
TINY_SPECIAL_TOKENS = ("<unk>", "<pad>", "<s>", "</s>", "<image>", "<video>")


def default_device_dtype(
    device: str | torch.device | None, dtype: str | torch.dtype | None
) -> tuple[torch.device, torch.dtype]:
    """CUDA when available, else CPU; bf16 on CUDA, fp32 on CPU unless ``dtype`` says otherwise.

    Raises:
        ValueError: a dtype name that is not a torch floating dtype.
    """
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
            raise InputError(f"unknown dtype {dtype!r}; valid: float32, bfloat16, float16")
        dtype = resolved
    return dev, dtype


@dataclass(frozen=True)
class Preprocessing:
    """Spatial and colour preprocessing, from the checkpoint's processor config when there is one."""

    frame_size: int  # short side after resizing
    crop_size: int  # square crop the vision tower takes (its image_size)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def read_preprocessing(folder: Path | None, image_size: int) -> Preprocessing:
    """Read size and normalisation from the checkpoint's processor config; CLIP defaults otherwise.

    The video processor's settings come first, looked up as transformers does (the ``video_processor``
    entry of ``processor_config.json``, then ``video_preprocessor_config.json``), then the image
    processor's (the ``image_processor`` entry, then ``preprocessor_config.json``). transformers 5
    saves a processor as one nested ``processor_config.json``; the -hf hub checkpoints keep separate
    files (LLaVA-NeXT-Video-7B-hf has only ``preprocessor_config.json``, which its video processor
    also reads).
    """
    config = _processor_settings(folder) if folder is not None else {}
    size = config.get("size") or {}
    frame_size = size.get("shortest_edge", image_size) if isinstance(size, dict) else int(size)
    return Preprocessing(
        frame_size=int(frame_size),
        crop_size=image_size,  # the vision tower's position embeddings fix the input side
        mean=tuple(config.get("image_mean", CLIP_MEAN)),
        std=tuple(config.get("image_std", CLIP_STD)),
    )


def _processor_settings(folder: Path) -> dict[str, Any]:
    """The first processor settings found in ``folder`` (see ``read_preprocessing``), or ``{}``."""

    def read(name: str) -> dict[str, Any]:
        path = folder / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    nested = read("processor_config.json")
    candidates = (
        nested.get("video_processor"),
        read("video_preprocessor_config.json"),
        nested.get("image_processor"),
        read("preprocessor_config.json"),
    )
    return next((c for c in candidates if isinstance(c, dict) and c), {})


class HFVideoBackend:
    """A transformers LLaVA-family video MLLM behind the ``FeatureBackend`` protocol.

    Give either ``model`` (eager: a model in memory, e.g. one being trained) or ``loader`` with
    ``config``, ``device`` and ``dtype`` (lazy: ``loader()`` is called once, on first use by
    ``forward``, ``pixel_values`` or ``.model``). Everything else (tokenising, the cache recipe's
    fields, label spans, decoding sizes) comes from the config and tokenizer and never loads weights.

    Args:
        name: registry name.
        model: the ``…ForConditionalGeneration`` model (its ``.model`` runs without the LM head).
        tokenizer: the matching tokenizer; the video placeholder must be one token.
        model_id: what the cache recipe records.
        family: fsar-prompts family.
        tokens_per_frame: V, from the config.
        has_cls: whether each frame's first video token is the CLS token.
        preprocessing: sizes and normalisation.
        loader: instead of ``model``: a zero-argument function returning the model.
        config: with ``loader``: the model's config (the geometry is read from it).
        device: with ``loader``: where the model will run (the loaded model is moved there).
        dtype: with ``loader``: the dtype the model will have.

    Raises:
        ValueError: neither or both of ``model`` and ``loader``, or ``loader`` without ``config``,
            ``device`` and ``dtype``.
    """

    def __init__(
        self,
        *,
        name: str,
        model: nn.Module | None = None,
        tokenizer: PreTrainedTokenizerBase,
        model_id: str,
        family: str,
        tokens_per_frame: int,
        has_cls: bool,
        preprocessing: Preprocessing,
        loader: Callable[[], nn.Module] | None = None,
        config: PretrainedConfig | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if (model is None) == (loader is None):
            raise InputError("HFVideoBackend takes either a model or a loader, not both and not neither")
        if loader is not None and (config is None or device is None or dtype is None):
            raise InputError("a lazy HFVideoBackend (loader=...) needs the model's config, device and dtype")
        self._model: nn.Module | None = None
        self._loader = loader
        self._lock = threading.Lock()
        if model is not None:
            config = model.config
            self._adopt(model)  # sets device and dtype from the parameters
        else:
            self.device, self.dtype = torch.device(device), dtype
        text_config = config.get_text_config()
        self.config = config
        self.name = name
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.family = family
        self.frame_size = preprocessing.frame_size
        self.crop_size = preprocessing.crop_size
        self.n_layers = int(text_config.num_hidden_layers)
        self.hidden_size = int(text_config.hidden_size)
        self.tokens_per_frame = tokens_per_frame
        self.has_cls = has_cls
        self.video_token_id = int(config.video_token_id)
        pad = tokenizer.pad_token_id
        if pad is None or pad == self.video_token_id:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_token_id = int(pad)
        self._mean = torch.tensor(preprocessing.mean, dtype=torch.float32)
        self._std = torch.tensor(preprocessing.std, dtype=torch.float32)
        self._placeholder_id = tokenizer.convert_tokens_to_ids("<video>")

    @property
    def model(self) -> nn.Module:
        """The model (eval, frozen); a lazy backend loads its weights here, on the first access only."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    log.info("loading the weights of %s (%s)", self.model_id, self.name)
                    self._adopt(self._loader())  # a failed load raises again on the next access
                    self._loader = None  # free what the loader holds
        return self._model

    @property
    def weights_loaded(self) -> bool:
        """Whether the model's weights are in memory (always for an eager backend)."""
        return self._model is not None

    def _adopt(self, model: nn.Module) -> None:
        """Freeze ``model`` and take device and dtype from its parameters."""
        self._model = model.eval().requires_grad_(False)  # frozen: features only
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, model_id={self.model_id!r}, L={self.n_layers}, "
            f"D_in={self.hidden_size}, V={self.tokens_per_frame}, device={self.device}, dtype={self.dtype})"
        )

    def pixel_values(self, frames: np.ndarray | Tensor) -> Tensor:
        """uint8 ``[B, T, H, W, 3]`` → normalised ``[B, T, 3, crop, crop]`` (see ``FeatureBackend``)."""
        array = frames.numpy() if isinstance(frames, Tensor) else np.asarray(frames)
        if array.ndim != 5 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise InputError(f"frames must be uint8 [B, T, H, W, 3], got {array.dtype} {list(array.shape)}")
        _ = self.model  # a lazy backend loads here, after the check, so device and dtype are the model's
        if array.shape[2:4] != (self.crop_size, self.crop_size):
            array = np.stack([resize_and_center_crop(clip, self.frame_size, self.crop_size) for clip in array])
        x = torch.from_numpy(array).to(torch.float32) / 255.0  # [B, T, H, W, 3]
        x = (x - self._mean) / self._std
        x = rearrange(x, "b t h w c -> b t c h w")
        return x.to(device=self.device, dtype=self.dtype)

    def tokenize(self, prompt: RenderedPrompt, n_frames: int) -> list[int]:
        """Ids of ``prefix + placeholder × (T · V) + suffix`` (see ``FeatureBackend``)."""
        return self._video_ids(list(self.tokenizer(self._expanded_text(prompt, n_frames)).input_ids), n_frames)

    def tokenize_with_offsets(self, prompt: RenderedPrompt, n_frames: int) -> tuple[list[int], list[tuple[int, int]]]:
        """``tokenize`` plus each token's character span (see ``FeatureBackend``).

        Raises:
            ValueError: as ``tokenize``; or a slow (Python) tokenizer, which has no offsets.
        """
        if not getattr(self.tokenizer, "is_fast", False):
            raise InputError(
                f"backend {self.name!r} has a slow tokenizer ({type(self.tokenizer).__name__}), which gives no "
                f"character offsets; load a fast one (AutoTokenizer.from_pretrained(..., use_fast=True))"
            )
        encoded = self.tokenizer(self._expanded_text(prompt, n_frames), return_offsets_mapping=True)
        offsets = [(int(a), int(b)) for a, b in encoded["offset_mapping"]]
        return self._video_ids(list(encoded["input_ids"]), n_frames), offsets

    def _expanded_text(self, prompt: RenderedPrompt, n_frames: int) -> str:
        if prompt.family != self.family or prompt.prefix is None or prompt.suffix is None:
            raise InputError(
                f"backend {self.name!r} takes video prompts of the {self.family!r} family, got a "
                f"{prompt.family!r} {prompt.role!r} prompt ({prompt.id})"
            )
        # Expanding the placeholder in the text and tokenising once is what the transformers
        # processors do, so the tokens around the video are the processor's.
        return prompt.prefix + prompt.video_placeholder * (n_frames * self.tokens_per_frame) + prompt.suffix

    def _video_ids(self, ids: list[int], n_frames: int) -> list[int]:
        """Placeholder ids → the config's video token id, and the count checked."""
        n_video = n_frames * self.tokens_per_frame
        if self._placeholder_id != self.video_token_id:
            ids = [self.video_token_id if i == self._placeholder_id else i for i in ids]
        found = sum(1 for i in ids if i == self.video_token_id)
        if found != n_video:
            raise InputError(
                f"expanding the video placeholder for T={n_frames} × V={self.tokens_per_frame} should give "
                f"{n_video} video tokens (id {self.video_token_id}) but the tokenizer gave {found}"
            )
        return ids

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        pixel_values: Tensor | None = None,
        *,
        cache: Any | None = None,
        use_cache: bool = False,
    ) -> BackendOutput:
        """Decoder forward with all hidden states (see ``FeatureBackend``); no LM head."""
        out = self.model.model(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            pixel_values_videos=pixel_values,
            cache=cache,
            use_cache=use_cache,
            output_hidden_states=True,
            return_dict=True,
        )
        return BackendOutput(hidden_states=tuple(out.hidden_states), cache=out.cache if use_cache else None)


@dataclass(frozen=True)
class PretrainedParts:
    """What ``open_pretrained`` reads without the weights, and how to load them.

    Attributes:
        config: the model config (``AutoConfig``).
        tokenizer: the tokenizer.
        folder: the local folder holding the processor config (None when it could not be located).
        load: zero-argument function returning the model (eval, on the device and in the dtype asked
            for); each call loads the weights again.
    """

    config: PretrainedConfig
    tokenizer: PreTrainedTokenizerBase
    folder: Path | None
    load: Callable[[], nn.Module]


def _not_found(family: str, ref: str, error: OSError) -> FileNotFoundError:
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    why = "downloads are off (HF_HUB_OFFLINE=1)" if offline else f"loading failed ({error})"
    return MissingFileError(
        f"cannot load the {family} model {ref!r}: it is neither a local checkpoint folder nor in the "
        f"Hugging Face cache, and {why}"
    )


def open_pretrained(
    model_class: type[nn.Module],
    model: str | os.PathLike[str],
    *,
    family: str,
    dtype: torch.dtype,
    device: torch.device,
    random_init_seed: int | None = None,
) -> PretrainedParts:
    """Read config, tokenizer and processor folder of a local folder or hub id; the weights wait.

    The returned ``load`` runs ``from_pretrained`` (or, with ``random_init_seed``, builds the same
    architecture with weights drawn from that seed: the model without what it learned, a baseline
    for "does pretraining help").

    Raises:
        FileNotFoundError: the model cannot be found; one sentence naming it (and why: a missing
            folder, a folder without ``config.json``, or no download allowed offline). ``load``
            raises the same sentence when the weights cannot be found.
    """
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import cached_file

    ref = str(model)
    local = Path(ref).expanduser()
    looks_local = local.exists() or ref.startswith((".", "/", "~")) or ref.count("/") > 1  # hub ids are "org/name"
    if looks_local and not (local / "config.json").is_file():
        what = "has no config.json" if local.is_dir() else "does not exist"
        raise MissingFileError(f"cannot load the {family} model: the folder {ref!r} {what}")
    try:
        config = AutoConfig.from_pretrained(ref)
        tokenizer = AutoTokenizer.from_pretrained(ref)
    except OSError as error:
        raise _not_found(family, ref, error) from None
    folder: Path | None = local if local.is_dir() else None
    if folder is None:
        config_file = cached_file(ref, "config.json", _raise_exceptions_for_missing_entries=False)
        folder = Path(config_file).parent if config_file else None

    def load() -> nn.Module:
        try:
            if random_init_seed is None:
                loaded = model_class.from_pretrained(ref, dtype=dtype)
            else:
                # A copy: building a model may write to its config, and the backend keeps this one.
                seeded = copy.deepcopy(config)
                loaded = seeded_init(lambda: model_class(seeded), random_init_seed).to(dtype)
        except OSError as error:
            raise _not_found(family, ref, error) from None
        return loaded.to(device).eval()

    return PretrainedParts(config=config, tokenizer=tokenizer, folder=folder, load=load)


def build_tiny_tokenizer() -> PreTrainedTokenizerBase:
    """A deterministic byte-level tokenizer built in code (no files, no training).

    Every byte is one token (ids 6 … 261, in the order of ``ByteLevel.alphabet()`` sorted), after
    the special tokens ``<unk> <pad> <s> </s> <image> <video>`` (ids 0 … 5). ``<s>`` is prepended to
    every encoded text, as Llama tokenizers do. Any text encodes, so every label works.

    Example:
        >>> tok = build_tiny_tokenizer()
        >>> len(tok), tok.convert_tokens_to_ids("<video>"), tok("USER: <video>").input_ids[:3]
        (262, 5, [2, 58, 56])
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(TINY_SPECIAL_TOKENS)}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return _wrap_tiny_tokenizer(tokenizer, vocab)


def _wrap_tiny_tokenizer(tokenizer: Any, vocab: dict[str, int], pad_token: str = "<pad>") -> PreTrainedTokenizerBase:
    """``<s>`` prepended as Llama does, and the special tokens a LLaVA processor expects."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        pad_token=pad_token,
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
    )


def build_word_tokenizer(
    words: Iterable[str], *, special_ids: Mapping[str, int] | None = None, pad_token: str = "<pad>"
) -> PreTrainedTokenizerBase:
    """A deterministic word-level tokenizer built in code: each of ``words`` is one token.

    Text is split BERT-style (on whitespace, and punctuation becomes its own token); a known word is
    one token, any other printable-ASCII word is spelled from single-character pieces (WordPiece
    ``##`` continuations), so every label still encodes. Ids: the special tokens ``<unk> <pad> <s>
    </s> <image> <video>`` (0 … 5), then ``words`` (sorted, de-duplicated), then the 95 printable
    ASCII characters and their 95 continuations. Case is kept. ``<s>`` is prepended, as Llama does.

    Args:
        words: the words that become whole tokens.
        special_ids: where the special tokens sit instead, e.g. a real checkpoint's
            ``{"<unk>": 0, "<s>": 1, "</s>": 2, "<image>": 32000, "<video>": 32001, "<pad>": 32002}``;
            it must name ``<unk> <s> </s> <image> <video>`` and ``pad_token``. The other tokens take
            the free ids from 0 upwards in the order above, and filler tokens ``<unused{id}>`` (which
            no text encodes to: the pre-tokenizer splits off ``<`` and ``>``) take the rest, so the
            ids are contiguous and ``len(tokenizer)`` is the largest id + 1.
        pad_token: the padding token (LLaVA-NeXT-Video pads with ``<unk>``).

    Raises:
        ValueError: ``special_ids`` lacks a required token, or gives two tokens one id.

    Example:
        >>> tok = build_word_tokenizer(["moving", "something", "up"])
        >>> tok.convert_ids_to_tokens(tok("moving something upward").input_ids)
        ['<s>', 'moving', 'something', 'up', '##w', '##a', '##r', '##d']
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    specials = dict(special_ids) if special_ids is not None else {t: i for i, t in enumerate(TINY_SPECIAL_TOKENS)}
    missing = sorted({"<unk>", "<s>", "</s>", "<image>", "<video>", pad_token} - specials.keys())
    if missing or len(set(specials.values())) != len(specials) or min(specials.values()) < 0:
        raise InputError(
            f"special_ids must give distinct non-negative ids to <unk> <s> </s> <image> <video> and the pad token "
            f"{pad_token!r}; got {specials} (missing: {missing})"
        )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    pieces = {piece for word in words for piece, _ in pre_tokenizer.pre_tokenize_str(str(word))}
    chars = [chr(c) for c in range(32, 127) if not chr(c).isspace()]
    vocab = dict(specials)
    free = (i for i in itertools.count() if i not in specials.values())
    for token in [*sorted(pieces), *chars, *(f"##{c}" for c in chars)]:
        if token not in vocab:
            vocab[token] = next(free)
    taken = set(vocab.values())
    vocab.update({f"<unused{i}>": i for i in range(max(taken)) if i not in taken})
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", max_input_chars_per_word=100))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    return _wrap_tiny_tokenizer(tokenizer, vocab, pad_token)


def transformers_class(name: str) -> Any:
    """The class ``transformers.<name>``, imported on first use (transformers' modeling code takes
    seconds to import; nothing that only reads caches or stores needs it)."""
    import transformers

    return getattr(transformers, name)


def seeded_init(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a model with weights from ``seed`` without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()
