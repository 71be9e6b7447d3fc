"""MPMM: the Multimodal Prototype Matching Metric of FSAR-LLaVA (arXiv:2603.26033).

The abstract says MPMM has no trainable parameters, that visual and textual features decide the
match together, and that it adaptively chooses which cues carry the decision. fsar's
reconstruction (``docs/method.md`` §3, MPMM), per query q and class c::

    s_v(q, c) = temporal(V'_q, P_v[c]) / T     # visual-temporal score, e.g. −OTAM_bi / T
    s_t(q, c) = cos(E_q, P_t[c])               # text–text
    s_x(q, c) = cos(mean_t V'_q, P_t[c])       # cross-modal (optional cue)
    p_m       = softmax_c(s_m / τ)             # per cue m (τ = MPMMConfig.tau)
    conf_m    = top1(p_m) − top2(p_m)          # or 1 − H(p_m) / log N
    w_m       = conf_m / Σ_m' conf_m'          # per query; uniform if every conf is 0
    logit(q, c) = Σ_m w_m · log p_m(c)         # [Q, N]

Selection modes: ``soft`` (above), ``hard`` (only the most confident cue per query) and ``fixed``
(constant weights; CLIP-FSAR's test-time fusion p_text^0.9 · p_vis^0.1 is ``fixed`` with
weights (0.1, 0.9) on (visual, text)). The weights are detached by default, so trainable modules
upstream cannot learn to game the confidence.

MPMM owns no parameters and no state: ``mpmm_match`` is a pure function of the prototypes and the
query streams, and the registered ``mpmm`` metric applies it to raw features with shot-mean
prototypes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from fsar_metric._common import apply_temperature, check_choice, check_temperature
from fsar_metric._registry import create_metric, register_metric
from fsar_metric._shapes import check_episode, check_finite, check_text
from fsar_metric.errors import InputError

__all__ = [
    "CONFIDENCES",
    "CUES",
    "MPMM",
    "SELECTIONS",
    "MPMMConfig",
    "MPMMOutput",
    "fuse_cues",
    "mpmm_match",
]

Cue = Literal["visual", "text", "cross"]
CUES: tuple[Cue, ...] = ("visual", "text", "cross")


def _margin(prob: Tensor) -> Tensor:
    """``[Q, N]`` probabilities → ``[Q]`` top-1 minus top-2 (1 when N = 1: nothing competes)."""
    if prob.shape[-1] == 1:
        return torch.ones_like(prob[:, 0])
    top2 = prob.topk(2, dim=-1).values  # [Q, 2]
    return top2[:, 0] - top2[:, 1]


def _entropy(prob: Tensor) -> Tensor:
    """``[Q, N]`` probabilities → ``[Q]`` 1 − H(p) / log N, in [0, 1] (1 when N = 1)."""
    n_way = prob.shape[-1]
    if n_way == 1:
        return torch.ones_like(prob[:, 0])
    entropy = -(prob * prob.clamp_min(torch.finfo(prob.dtype).tiny).log()).sum(-1)
    return (1.0 - entropy / math.log(n_way)).clamp_min(0.0)


#: Confidence of one cue's class distribution, ``[Q, N] → [Q]``, larger = more decisive.
CONFIDENCES: dict[str, Callable[[Tensor], Tensor]] = {"margin": _margin, "entropy": _entropy}


def _soft(confidence: Tensor, fixed: Tensor | None) -> Tensor:
    """``[Q, M]`` confidences → weights proportional to them; uniform where all are 0."""
    total = confidence.sum(-1, keepdim=True)  # [Q, 1]
    uniform = torch.full_like(confidence, 1.0 / confidence.shape[-1])
    return torch.where(total > 0, confidence / total.clamp_min(torch.finfo(confidence.dtype).tiny), uniform)


def _hard(confidence: Tensor, fixed: Tensor | None) -> Tensor:
    """``[Q, M]`` → one-hot on the most confident cue (the first one on ties)."""
    return nn.functional.one_hot(confidence.argmax(-1), confidence.shape[-1]).to(confidence.dtype)


def _fixed(confidence: Tensor, fixed: Tensor | None) -> Tensor:
    """``[Q, M]`` → the configured constant weights, normalised to sum to 1."""
    assert fixed is not None  # guaranteed by MPMMConfig
    return (fixed / fixed.sum()).to(confidence).expand_as(confidence)


#: How per-query cue weights follow from the confidences, ``[Q, M] → [Q, M]``.
SELECTIONS: dict[str, Callable[[Tensor, Tensor | None], Tensor]] = {"soft": _soft, "hard": _hard, "fixed": _fixed}


@dataclass(frozen=True)
class MPMMConfig:
    """Options of MPMM (it has no parameters: these are all fixed choices)."""

    # Registered, parameter-free temporal metric for the visual cue, and its constructor options.
    temporal_metric: str = "otam"
    temporal_kwargs: Mapping[str, Any] = field(default_factory=dict)
    # Divide the visual score by T (a per-frame score, so τ means the same for any T), or not.
    visual_per_frame: bool = True
    # Cues that take part, a subset of ("visual", "text", "cross").
    cues: tuple[Cue, ...] = ("visual", "text")
    # Softmax temperature τ of each cue (one value for all).
    tau: float = 0.1
    # How decisive a cue is for a query: "margin" (top-1 − top-2) or "entropy" (1 − H / log N).
    confidence: str = "margin"
    # "soft" (weights ∝ confidence), "hard" (the most confident cue only) or "fixed".
    selection: str = "soft"
    # Weights per cue for selection="fixed", in the order of `cues`.
    fixed_weights: tuple[float, ...] | None = None
    # Detach the adaptive weights from the graph during training (fsar's choice, docs/method.md §3).
    detach_weights: bool = True

    def __post_init__(self) -> None:
        if not self.cues or len(set(self.cues)) != len(self.cues):
            raise InputError(f"mpmm.cues must be distinct names from {CUES}, got {self.cues}")
        for cue in self.cues:
            check_choice("mpmm.cues entry", cue, CUES)
        check_choice("mpmm.confidence", self.confidence, tuple(CONFIDENCES))
        check_choice("mpmm.selection", self.selection, tuple(SELECTIONS))
        if not self.tau > 0:
            raise InputError(f"mpmm.tau must be > 0, got {self.tau}")
        if self.selection == "fixed":
            if self.fixed_weights is None or len(self.fixed_weights) != len(self.cues):
                raise InputError(
                    f"mpmm.selection='fixed' needs fixed_weights, one per cue of {self.cues}, got {self.fixed_weights}"
                )
            if any(w < 0 for w in self.fixed_weights) or sum(self.fixed_weights) <= 0:
                raise InputError(
                    f"mpmm.fixed_weights must be non-negative with a positive sum, got {self.fixed_weights}"
                )


@dataclass(frozen=True)
class MPMMOutput:
    """What MPMM decided for one episode.

    Attributes:
        logits: ``[Q, N]`` fused logits Σ_m w_m log p_m.
        cue_scores: per cue, ``[Q, N]`` scores s_m before the temperature.
        weights: ``[Q, M]`` per-query cue weights (non-negative, summing to 1), in ``cues`` order.
        cues: the cue names, in the order of ``weights``' last axis.
    """

    logits: Tensor
    cue_scores: dict[str, Tensor]
    weights: Tensor
    cues: tuple[str, ...]


def fuse_cues(scores: Mapping[str, Tensor], config: MPMMConfig) -> MPMMOutput:
    """Fuse per-cue scores ``{cue: [Q, N]}`` (keys in ``config.cues``) into MPMM logits."""
    log_probs = torch.stack(
        [torch.log_softmax(scores[cue] / config.tau, dim=-1) for cue in config.cues], dim=-1
    )  # [Q, N, M]
    probs = log_probs.exp()
    confidence = torch.stack([CONFIDENCES[config.confidence](probs[..., m]) for m in range(len(config.cues))], -1)
    fixed = None if config.fixed_weights is None else torch.tensor(config.fixed_weights)
    weights = SELECTIONS[config.selection](confidence, fixed)  # [Q, M]
    if config.detach_weights:
        weights = weights.detach()
    logits = (log_probs * weights[:, None, :]).sum(-1)  # [Q, N]
    return MPMMOutput(logits=logits, cue_scores=dict(scores), weights=weights, cues=config.cues)


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    """``a [Q, D]``, ``b [N, D]`` → ``[Q, N]`` cosine similarities."""
    return nn.functional.normalize(a, dim=-1) @ nn.functional.normalize(b, dim=-1).T


def mpmm_match(
    query_frames: Tensor,
    query_text: Tensor | None,
    proto_frames: Tensor,
    proto_text: Tensor | None,
    temporal: nn.Module,
    config: MPMMConfig,
) -> MPMMOutput:
    """Match queries against class prototypes with every configured cue.

    Args:
        query_frames: ``[Q, T, D]`` query frames V'_q.
        query_text: ``[Q, D]`` label-free query text E_q (needed by the ``text`` cue).
        proto_frames: ``[N, T, D]`` visual prototypes P_v.
        proto_text: ``[N, D]`` textual prototypes P_t (needed by ``text`` and ``cross``).
        temporal: a parameter-free registered metric for the visual cue.
        config: ``MPMMConfig``.

    Returns:
        ``MPMMOutput`` with logits ``[Q, N]``.
    """
    scores: dict[str, Tensor] = {}
    for cue in config.cues:
        if cue == "visual":
            visual = temporal(proto_frames[:, None], query_frames)  # [Q, N]
            scores[cue] = visual / query_frames.shape[1] if config.visual_per_frame else visual
            continue
        if proto_text is None or (cue == "text" and query_text is None):
            raise InputError(f"MPMM's {cue!r} cue needs text features; drop it from cues for visual-only input")
        query_vector = query_text if cue == "text" else query_frames.mean(1)  # [Q, D]
        scores[cue] = _cosine(query_vector, proto_text)  # [Q, N]
    return fuse_cues(scores, config)


def build_temporal(config: MPMMConfig) -> nn.Module:
    """The visual cue's metric; refuses learnable ones (MPMM must stay parameter-free)."""
    temporal = create_metric(config.temporal_metric, **dict(config.temporal_kwargs))
    if any(True for _ in temporal.parameters()):
        raise InputError(
            f"MPMM's temporal metric must be parameter-free, but {config.temporal_metric!r} has parameters"
        )
    return temporal


@register_metric("mpmm", uses_text=True)
class MPMM(nn.Module):
    """MPMM on raw features with shot-mean prototypes (no parameters).

    P_v = mean_k support, P_t = n(mean_k n(support_text)); queries use their own frames and
    label-free text. Takes ``MPMMConfig`` fields as keyword arguments; ``temperature`` divides the
    fused logits (the contract option every metric has), ``tau`` is the per-cue softmax temperature.

    Shapes: support ``[N, K, T, D]``, query ``[Q, T, D]``, support_text ``[N, K, D]``, query_text
    ``[Q, D]`` → logits ``[Q, N]``.

    Example:
        >>> import torch
        >>> from fsar_metric import create_metric
        >>> mpmm = create_metric("mpmm", cues=("visual", "text", "cross"))
        >>> s, q = torch.randn(5, 2, 8, 32), torch.randn(5, 8, 32)
        >>> mpmm(s, q, support_text=torch.randn(5, 2, 32), query_text=torch.randn(5, 32)).shape
        torch.Size([5, 5])
    """

    def __init__(
        self,
        config: MPMMConfig | None = None,
        *,
        temperature: float | None = None,
        check_finite: bool = False,
        **fields: Any,
    ) -> None:
        super().__init__()
        if config is not None and fields:
            raise InputError(f"give MPMM a config or fields, not both (got fields {sorted(fields)})")
        valid = sorted(f.name for f in dataclasses.fields(MPMMConfig))
        unknown = sorted(set(fields) - set(valid))
        if unknown:
            raise InputError(f"metric 'mpmm' takes no option(s) {unknown}; MPMMConfig fields: {', '.join(valid)}")
        self.config = config if config is not None else MPMMConfig(**fields)
        check_temperature(temperature)
        self.temperature = temperature
        self.check_finite = check_finite
        self.temporal = build_temporal(self.config)

    def match(
        self, support: Tensor, query: Tensor, *, support_text: Tensor | None = None, query_text: Tensor | None = None
    ) -> MPMMOutput:
        """Like ``forward`` but returns the full ``MPMMOutput`` (cue scores and weights)."""
        needs_text = any(c in ("text", "cross") for c in self.config.cues)
        check_episode(support, query)
        check_text(support, query, support_text, query_text, required=False)
        if needs_text and support_text is None:
            raise InputError(f"MPMM with cues {self.config.cues} needs support_text")
        if "text" in self.config.cues and query_text is None:
            raise InputError(f"MPMM with cues {self.config.cues} needs query_text")
        if self.check_finite:
            check_finite(support=support, query=query, support_text=support_text, query_text=query_text)
        proto_text = None
        if support_text is not None:
            proto_text = nn.functional.normalize(nn.functional.normalize(support_text, dim=-1).mean(1), dim=-1)
        return mpmm_match(query, query_text, support.mean(1), proto_text, self.temporal, self.config)

    def forward(
        self, support: Tensor, query: Tensor, *, support_text: Tensor | None = None, query_text: Tensor | None = None
    ) -> Tensor:
        """``support [N, K, T, D]``, ``query [Q, T, D]`` (+ text) → logits ``[Q, N]``."""
        logits = self.match(support, query, support_text=support_text, query_text=query_text).logits
        return apply_temperature(logits, self.temperature)
