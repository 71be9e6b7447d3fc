"""FSAR-LLaVA's trainable head: MFEM → CTPC → MPMM (Xing et al., "Knowledge is Power: Advancing
Few-shot Action Recognition with Multimodal Semantics from MLLMs", arXiv:2603.26033).

This is fsar's documented reconstruction: the paper's internals were not public, so every open
choice is a field of ``FSARLLaVAConfig`` (``docs/method.md`` gives each default and its reason).
Numbers produced with it are "FSAR-LLaVA (fsar reconstruction)", never a reproduction.

Inputs per episode, from a frozen MLLM (``fsar_metric.Episode`` carries them):
support visual ``[N, K, T, D_in]``, support text under the label-aware prompt ``[N, K, D_in]``,
optionally support text under the label-free prompt ``[N, K, D_in]``, query visual ``[Q, T, D_in]``,
query text under the label-free prompt ``[Q, D_in]``. Output: logits ``[Q, N]``.

Per-video work (MFEM, and CTPC's Enc_p when shots merge after it) does not depend on the episode:
``encode_pool`` runs it once for a pool of videos and ``score_pool`` scores any episode drawn
from the pool, which is how evaluation over 10,000 episodes stays fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from fsar_metric._common import apply_temperature, check_temperature
from fsar_metric._multimodal import Episode
from fsar_metric._registry import register_metric
from fsar_metric._shapes import check_episode, check_finite, check_text, fmt_shape
from fsar_metric.errors import InputError
from fsar_metric.head.ctpc import CTPC, CTPCConfig, Prototypes
from fsar_metric.head.mfem import MFEM, MFEMConfig
from fsar_metric.head.mpmm import MPMMConfig, MPMMOutput, build_temporal, mpmm_match

__all__ = [
    "ABLATIONS",
    "EncodedVideos",
    "FSARLLaVA",
    "FSARLLaVAConfig",
    "LossConfig",
    "ablation",
    "config_from_fields",
    "list_ablations",
]


@dataclass(frozen=True)
class LossConfig:
    """Weights of the named loss terms; a weight of 0 switches the term off (docs/method.md §4)."""

    # Cross-entropy of the fused MPMM logits against the episode labels.
    episode_ce: float = 1.0
    # The same cross-entropy on each cue's own logits s_m / τ, averaged over cues.
    modality_ce: float = 0.0
    # Queries classified against every class of the split: cos(mean_t V'_q, A_c) / base_class_tau,
    # A_c the MFEM text projection of a class anchor (CLIP-FSAR's auxiliary loss, weighted 3.0 there).
    base_class_ce: float = 0.0
    base_class_tau: float = 0.1

    def __post_init__(self) -> None:
        for name in ("episode_ce", "modality_ce", "base_class_ce"):
            if getattr(self, name) < 0:
                raise InputError(f"losses.{name} must be >= 0, got {getattr(self, name)}")
        if not self.base_class_tau > 0:
            raise InputError(f"losses.base_class_tau must be > 0, got {self.base_class_tau}")


@dataclass(frozen=True)
class FSARLLaVAConfig:
    """Everything that defines an FSAR-LLaVA head (see ``docs/method.md``)."""

    in_dim: int = 4096  # D_in: the visual feature width (the MLLM hidden width; Video-LLaVA-7B: 4096)
    # D_t: the text feature width when it differs from the visual one (a spatial grid of patch states
    # widens the visual stream only); None = in_dim.
    text_in_dim: int | None = None
    dim: int = 1024  # D: head width (CLIP-FSAR / MA-FSAR scale; 512 is the light preset)
    n_frames: int = 8  # largest T the learned temporal embedding covers
    n_heads: int = 8  # attention heads everywhere in the head
    dropout: float = 0.1
    mfem: MFEMConfig = field(default_factory=MFEMConfig)
    ctpc: CTPCConfig = field(default_factory=CTPCConfig)
    mpmm: MPMMConfig = field(default_factory=MPMMConfig)
    losses: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        for name, kind in (("mfem", MFEMConfig), ("ctpc", CTPCConfig), ("mpmm", MPMMConfig), ("losses", LossConfig)):
            if not isinstance(getattr(self, name), kind):
                raise InputError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")
        if self.text_in_dim is not None and self.text_in_dim < 1:
            raise InputError(f"text_in_dim must be positive (or None = in_dim), got {self.text_in_dim}")
        if min(self.in_dim, self.dim, self.n_frames, self.n_heads) < 1:
            raise InputError(
                f"in_dim, dim, n_frames and n_heads must be positive, got {self.in_dim}, {self.dim}, "
                f"{self.n_frames}, {self.n_heads}"
            )
        if self.dim % self.n_heads:
            raise InputError(f"dim = {self.dim} must be divisible by n_heads = {self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout must lie in [0, 1), got {self.dropout}")


#: The sections of ``FSARLLaVAConfig`` that are dataclasses of their own.
_SECTIONS: dict[str, type] = {"mfem": MFEMConfig, "ctpc": CTPCConfig, "mpmm": MPMMConfig, "losses": LossConfig}


def config_from_fields(fields: Mapping[str, Any]) -> FSARLLaVAConfig:
    """An ``FSARLLaVAConfig`` from plain values, as a TOML table or a command line gives them.

    A section (``mfem``, ``ctpc``, ``mpmm``, ``losses``) may be a mapping of its fields
    (``{"losses": {"base_class_ce": 1.0}}``); lists become tuples (``cues``, ``fixed_weights``).

    Raises:
        ValueError: an unknown field, at the top or in a section; the message lists the valid ones.

    Example:
        >>> config_from_fields({"in_dim": 64, "mpmm": {"cues": ["visual", "cross"]}}).mpmm.cues
        ('visual', 'cross')
    """
    known = {f.name for f in dataclasses.fields(FSARLLaVAConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise InputError(f"unknown FSARLLaVAConfig fields {unknown}; valid: {', '.join(sorted(known))}")
    values = dict(fields)
    for section, kind in _SECTIONS.items():
        given = values.get(section)
        if not isinstance(given, Mapping):
            continue
        valid = {f.name for f in dataclasses.fields(kind)}
        bad = sorted(set(given) - valid)
        if bad:
            raise InputError(f"unknown {section} option(s) {bad}; valid: {', '.join(sorted(valid))}")
        values[section] = kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})
    return FSARLLaVAConfig(**values)


def _replace(config: FSARLLaVAConfig, section: str, **changes: Any) -> FSARLLaVAConfig:
    return dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **changes)})


#: Named ablations: each maps a config to the config with one component switched.
ABLATIONS: dict[str, Callable[[FSARLLaVAConfig], FSARLLaVAConfig]] = {
    "full": lambda c: c,
    "no_mfem": lambda c: _replace(c, "mfem", enhance=False),  # MFEM → plain projections
    "no_ctpc": lambda c: _replace(c, "ctpc", enabled=False),  # CTPC → shot-mean prototypes
    "visual_only": lambda c: _replace(c, "mpmm", cues=("visual",), selection="soft", fixed_weights=None),
    "text_only": lambda c: _replace(c, "mpmm", cues=("text",), selection="soft", fixed_weights=None),
    "with_cross": lambda c: _replace(c, "mpmm", cues=("visual", "text", "cross"), fixed_weights=None),
    "hard_selection": lambda c: _replace(c, "mpmm", selection="hard", fixed_weights=None),
    "fixed_fusion": lambda c: _replace(
        c, "mpmm", cues=("visual", "text"), selection="fixed", fixed_weights=(0.1, 0.9)
    ),  # CLIP-FSAR's test-time p_text^0.9 · p_vis^0.1
    "task_step": lambda c: _replace(c, "ctpc", task_step="both"),
}


def list_ablations() -> list[str]:
    """Names accepted by ``ablation``."""
    return list(ABLATIONS)


def ablation(config: FSARLLaVAConfig, name: str) -> FSARLLaVAConfig:
    """``config`` with the named ablation applied (``list_ablations()``).

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    if name not in ABLATIONS:
        raise InputError(f"unknown ablation {name!r}; valid: {', '.join(ABLATIONS)}")
    return ABLATIONS[name](config)


@dataclass(frozen=True)
class EncodedVideos:
    """Per-video outputs of the head's episode-independent part (leading axes: any video layout).

    Attributes:
        frames: ``[..., T, D]`` frames after MFEM (and CTPC's Enc_p where it runs per video).
        text: ``[..., D]`` text after MFEM: label-aware for support-side encodings, label-free for
            query-side ones; None when not given.
        text_free: ``[..., D]`` label-free text of support-side encodings, or None.
    """

    frames: Tensor
    text: Tensor | None = None
    text_free: Tensor | None = None

    @staticmethod
    def cat(parts: list[EncodedVideos]) -> EncodedVideos:
        """Concatenate encodings of consecutive video chunks along the first axis."""

        def join(tensors: list[Tensor | None]) -> Tensor | None:
            return None if tensors[0] is None else torch.cat(tensors)  # type: ignore[arg-type]

        return EncodedVideos(
            torch.cat([p.frames for p in parts]), join([p.text for p in parts]), join([p.text_free for p in parts])
        )

    def index(self, idx: Tensor) -> EncodedVideos:
        """Select videos: ``idx`` of any shape ``[*S]`` over the first axis → leading axes ``[*S]``."""
        return EncodedVideos(
            self.frames[idx],
            None if self.text is None else self.text[idx],
            None if self.text_free is None else self.text_free[idx],
        )


@dataclass(frozen=True)
class EncodedPool:
    """A pool of videos encoded once, for scoring many episodes drawn from it.

    Attributes:
        support: support-side encodings (label-aware text token, label-free text), ``[P, ...]``.
        query: query-side encodings (label-free text), ``[P, ...]``.
    """

    support: EncodedVideos
    query: EncodedVideos


@register_metric(
    "fsar_llava",
    uses_text=True,
    uses_label_free_support=True,
    pools_per_video=True,
    owns_losses=True,
    takes_in_dim=True,
    # D = min(D_t, 1024): 1024 for the 7B models' 4096 (CLIP-FSAR-scale heads), the full width of a
    # tiny model; text_in_dim only when the text width differs (a spatial grid widens D_in alone).
    sizes=lambda in_dim, text_dim: {
        "text_in_dim": None if text_dim == in_dim else text_dim,
        "dim": min(text_dim, 1024),
    },
)
class FSARLLaVA(nn.Module):
    """The FSAR-LLaVA head (fsar reconstruction): MFEM, CTPC and the parameter-free MPMM.

    Args:
        config: a full ``FSARLLaVAConfig``; or leave it None and pass its fields as keywords
            (``create_metric("fsar_llava", in_dim=4096, dim=1024)``), sections as mappings
            (``losses={"base_class_ce": 1.0}``, ``mpmm={"cues": ("visual", "cross")}``).
        temperature: if given, the fused logits are divided by it (the contract option).
        check_finite: raise on NaN / inf inputs.

    Shapes: support ``[N, K, T, D_in]``, query ``[Q, T, D_in]``, support_text ``[N, K, D_in]``,
    query_text ``[Q, D_in]``, support_text_free ``[N, K, D_in]`` → logits ``[Q, N]``.

    Example:
        >>> import torch
        >>> from fsar_metric import create_metric
        >>> head = create_metric("fsar_llava", in_dim=64, dim=32, n_heads=4).eval()
        >>> s, q = torch.randn(5, 1, 8, 64), torch.randn(5, 8, 64)
        >>> head(s, q, support_text=torch.randn(5, 1, 64), query_text=torch.randn(5, 64)).shape
        torch.Size([5, 5])
    """

    def __init__(
        self,
        config: FSARLLaVAConfig | None = None,
        *,
        temperature: float | None = None,
        check_finite: bool = False,
        **fields: Any,
    ) -> None:
        super().__init__()
        if config is not None and fields:
            raise InputError(f"give FSARLLaVA a config or fields, not both (got fields {sorted(fields)})")
        if config is None:
            config = config_from_fields(fields)
        check_temperature(temperature)
        self.config = config
        self.temperature = temperature
        self.check_finite = check_finite
        self.mfem = MFEM(
            config.in_dim,
            config.dim,
            config.n_frames,
            config.n_heads,
            config.dropout,
            config.mfem,
            text_in_dim=config.text_in_dim,
        )
        self.ctpc = CTPC(config.dim, config.n_heads, config.dropout, config.ctpc)
        self.temporal = build_temporal(config.mpmm)  # parameter-free by construction

    # ------------------------------------------------------------------ per-video part
    def encode_support(self, visual: Tensor, text: Tensor | None, text_free: Tensor | None = None) -> EncodedVideos:
        """Support-side encoding of videos.

        Args:
            visual: ``[B, T, D_in]``.
            text: ``[B, D_in]`` label-aware text, or None.
            text_free: ``[B, D_in]`` label-free text, or None.

        Returns:
            ``EncodedVideos`` with frames ``[B, T, D]``, text ``[B, D]``, text_free ``[B, D]``.
        """
        frames, token = self.mfem(visual, text)  # [B, T, D], [B, D]
        free = None if text_free is None else self.mfem.encode_text(text_free, frames)
        return EncodedVideos(self.ctpc.encode_support(frames, token), token, free)

    def encode_query(self, visual: Tensor, text: Tensor | None) -> EncodedVideos:
        """Query-side encoding: ``visual [B, T, D_in]``, label-free ``text [B, D_in]`` → ``[B, T, D]``, ``[B, D]``."""
        frames, token = self.mfem(visual, text)
        return EncodedVideos(self.ctpc.encode_query(frames, token), token)

    def encode_pool(
        self,
        visual: Tensor,
        support_text: Tensor | None,
        query_text: Tensor | None,
        *,
        chunk_size: int | None = None,
    ) -> EncodedPool:
        """Encode a pool of videos once for both roles.

        Args:
            visual: ``[P, T, D_in]``.
            support_text: ``[P, D_in]`` label-aware text of each video (its own class), or None.
            query_text: ``[P, D_in]`` label-free text of each video, or None.
            chunk_size: encode this many videos at a time (bounds activation memory); all at once
                when None.

        Returns:
            ``EncodedPool`` whose encodings have leading axis ``[P]``.
        """
        step = visual.shape[0] if chunk_size is None else chunk_size
        if step < 1:
            raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
        supports, queries = [], []
        for start in range(0, visual.shape[0], step):
            part = slice(start, start + step)
            s_text = None if support_text is None else support_text[part]
            q_text = None if query_text is None else query_text[part]
            supports.append(self.encode_support(visual[part], s_text, q_text))
            queries.append(self.encode_query(visual[part], q_text))
        return EncodedPool(support=EncodedVideos.cat(supports), query=EncodedVideos.cat(queries))

    # ------------------------------------------------------------------ episode part
    def match(self, support: EncodedVideos, query: EncodedVideos) -> MPMMOutput:
        """Prototypes and MPMM from encodings: support leading axes ``[N, K]``, query ``[Q]``."""
        prototypes: Prototypes = self.ctpc.prototypes(support.frames, support.text, support.text_free)
        return mpmm_match(query.frames, query.text, prototypes.visual, prototypes.text, self.temporal, self.config.mpmm)

    def score_pool(self, pool: EncodedPool, support_idx: Tensor, query_idx: Tensor) -> Tensor:
        """Logits ``[Q, N]`` of an episode drawn from a pool: ``support_idx [N, K]``, ``query_idx [Q]``."""
        output = self.match(pool.support.index(support_idx), pool.query.index(query_idx))
        return apply_temperature(output.logits, self.temperature)

    def _check(
        self,
        support: Tensor,
        query: Tensor,
        support_text: Tensor | None,
        query_text: Tensor | None,
        support_text_free: Tensor | None,
    ) -> None:
        check_episode(support, query)
        check_text(support, query, support_text, query_text, required=False)
        if support_text_free is not None:
            check_text(support, query, support_text_free, query_text, required=False)
        if support.shape[-1] != self.config.in_dim:
            raise InputError(f"FSARLLaVA was built for D_in = {self.config.in_dim}, got support {fmt_shape(support)}")
        text_width = self.config.in_dim if self.config.text_in_dim is None else self.config.text_in_dim
        for name, text in (
            ("support_text", support_text),
            ("query_text", query_text),
            ("support_text_free", support_text_free),
        ):
            if text is not None and text.shape[-1] != text_width:
                raise InputError(f"FSARLLaVA was built for text width D_t = {text_width}, got {name} {fmt_shape(text)}")
        if support_text is None and support_text_free is None:
            raise InputError("FSARLLaVA needs support text: support_text (label-aware) and/or support_text_free")
        needs_query_text = "text" in self.config.mpmm.cues or (
            self.config.ctpc.enabled and self.config.ctpc.query_text_token == "label_free"
        )
        if needs_query_text and query_text is None:
            raise InputError("FSARLLaVA needs query_text (the label-free prompt's text feature of each query)")
        if self.check_finite:
            check_finite(
                support=support,
                query=query,
                support_text=support_text,
                query_text=query_text,
                support_text_free=support_text_free,
            )

    def _run(
        self,
        support: Tensor,
        query: Tensor,
        support_text: Tensor | None,
        query_text: Tensor | None,
        support_text_free: Tensor | None,
    ) -> tuple[MPMMOutput, EncodedVideos]:
        self._check(support, query, support_text, query_text, support_text_free)
        n_way, n_shot = support.shape[:2]

        def flat(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.flatten(0, 1)  # [N*K, ...]

        encoded = self.encode_support(flat(support), flat(support_text), flat(support_text_free))
        way_major = EncodedVideos(
            encoded.frames.unflatten(0, (n_way, n_shot)),
            None if encoded.text is None else encoded.text.unflatten(0, (n_way, n_shot)),
            None if encoded.text_free is None else encoded.text_free.unflatten(0, (n_way, n_shot)),
        )
        queries = self.encode_query(query, query_text)
        return self.match(way_major, queries), queries

    def forward(
        self,
        support: Tensor,
        query: Tensor,
        *,
        support_text: Tensor | None = None,
        query_text: Tensor | None = None,
        support_text_free: Tensor | None = None,
    ) -> Tensor:
        """Logits ``[Q, N]`` of one episode (shapes in the class docstring)."""
        output, _ = self._run(support, query, support_text, query_text, support_text_free)
        return apply_temperature(output.logits, self.temperature)

    def losses(self, episode: Episode) -> dict[str, Tensor]:
        """Named loss terms of one episode, each already multiplied by its ``LossConfig`` weight.

        Terms with weight 0 are not computed. ``base_class_ce`` needs ``episode.class_anchors``
        ``[C, D_in]`` and ``episode.query_class_ids`` ``[Q]``.
        """
        if episode.query_labels is None:
            raise InputError("FSARLLaVA.losses needs an episode with query_labels")
        weights = self.config.losses
        output, queries = self._run(
            episode.support, episode.query, episode.support_text, episode.query_text, episode.support_text_free
        )
        labels = episode.query_labels
        terms = {"episode_ce": weights.episode_ce * nn.functional.cross_entropy(output.logits, labels)}
        if weights.modality_ce > 0:
            per_cue = [
                nn.functional.cross_entropy(output.cue_scores[cue] / self.config.mpmm.tau, labels)
                for cue in output.cues
            ]
            terms["modality_ce"] = weights.modality_ce * torch.stack(per_cue).mean()
        if weights.base_class_ce > 0:
            if episode.class_anchors is None or episode.query_class_ids is None:
                raise InputError("losses.base_class_ce > 0 needs episode.class_anchors and episode.query_class_ids")
            anchors = nn.functional.normalize(self.mfem.project_text(episode.class_anchors), dim=-1)  # [C, D]
            pooled = nn.functional.normalize(queries.frames.mean(1), dim=-1)  # [Q, D]
            logits = pooled @ anchors.T / weights.base_class_tau  # [Q, C]
            terms["base_class_ce"] = weights.base_class_ce * nn.functional.cross_entropy(
                logits, episode.query_class_ids
            )
        return terms

    def n_parameters(self, trainable_only: bool = True) -> int:
        """Number of (trainable) parameters; MPMM contributes none."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def extra_repr(self) -> str:
        return f"in_dim={self.config.in_dim}, dim={self.config.dim}, cues={self.config.mpmm.cues}"
