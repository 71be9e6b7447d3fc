"""The FSAR-LLaVA head (fsar reconstruction of arXiv:2603.26033): MFEM, CTPC and MPMM."""

from fsar_metric.head.ctpc import CTPC, CTPCConfig, Prototypes
from fsar_metric.head.fsar_llava import (
    ABLATIONS,
    EncodedPool,
    EncodedVideos,
    FSARLLaVA,
    FSARLLaVAConfig,
    LossConfig,
    ablation,
    list_ablations,
)
from fsar_metric.head.mfem import MFEM, MFEMConfig
from fsar_metric.head.mpmm import CONFIDENCES, CUES, MPMM, SELECTIONS, MPMMConfig, MPMMOutput, fuse_cues, mpmm_match

__all__ = [
    "ABLATIONS",
    "CONFIDENCES",
    "CTPC",
    "CUES",
    "MFEM",
    "MPMM",
    "SELECTIONS",
    "CTPCConfig",
    "EncodedPool",
    "EncodedVideos",
    "FSARLLaVA",
    "FSARLLaVAConfig",
    "LossConfig",
    "MFEMConfig",
    "MPMMConfig",
    "MPMMOutput",
    "Prototypes",
    "ablation",
    "fuse_cues",
    "list_ablations",
    "mpmm_match",
]
