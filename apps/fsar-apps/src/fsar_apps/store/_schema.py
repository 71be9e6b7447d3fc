"""The LanceDB row schema of a prototype store, and the recipe every row must match."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from lancedb.pydantic import LanceModel, MultiVector, Vector

__all__ = ["StoreRecipe", "prototype_model"]


@dataclass(frozen=True)
class StoreRecipe:
    """What makes two prototypes comparable: the same features and the same trained head.

    Attributes:
        feature_recipe: how the MLLM features were made (model, layer, pooling, sampling, prompt
            ids, width); any JSON-serialisable mapping.
        head_hash: hash of the trained head's weights and config (``head_fingerprint``).
        dim: D, the width of the stored prototypes.
        n_frames: T, the frames of a visual prototype.
    """

    feature_recipe: dict[str, Any] = field(default_factory=dict)
    head_hash: str = ""
    dim: int = 0
    n_frames: int = 0

    def __post_init__(self) -> None:
        # Canonical JSON form (tuples become lists), so a recipe equals itself after a round trip
        # through the store's metadata.
        object.__setattr__(self, "feature_recipe", json.loads(json.dumps(self.feature_recipe, sort_keys=True)))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> StoreRecipe:
        return cls(**json.loads(text))

    @property
    def fingerprint(self) -> str:
        """Short stable hash of the whole recipe (stored on every row)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def describe(self) -> str:
        model = self.feature_recipe.get("model_id", self.feature_recipe.get("model", "?"))
        return f"model={model}, head={self.head_hash[:12]}, dim={self.dim}, frames={self.n_frames}"


@functools.cache
def prototype_model(dim: int) -> type[LanceModel]:
    """The row model for prototypes of width ``dim`` (LanceDB vector columns have a fixed size)."""

    class Prototype(LanceModel):
        key: str  # "<tag>/<action>": unique per row; adding an existing key replaces the row
        action: str  # the action name as the user gave it
        action_text: str  # normalised name (what a label-aware prompt used)
        tag: str  # dataset or user collection
        vector: Vector(dim)  # type: ignore[valid-type]  # L2-normalised mean of the visual prototype: search key
        frames: MultiVector(dim)  # type: ignore[valid-type]  # [T, D] visual prototype P_v
        text: Vector(dim)  # type: ignore[valid-type]  # [D] unit-norm text prototype P_t
        shots: int  # K support videos behind the prototype
        support_ids: list[str]  # their video ids
        recipe_hash: str  # StoreRecipe.fingerprint of the features and head that made it
        head_hash: str
        created: datetime

    return Prototype
