"""The LanceDB row schema of a prototype store, and the recipe every row must match."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lancedb.pydantic import LanceModel, MultiVector, Vector

from fsar_features import FeatureRecipe
from fsar_metric import MPMMConfig
from fsar_metric.errors import InputError

__all__ = ["StoreRecipe", "prototype_model"]

#: The keys of a recipe row written before the store recorded its MPMM settings (a dict
#: ``feature_recipe``, no ``mpmm``); such a row is read as it was and keeps its fingerprint.
_LEGACY_KEYS = {"dim", "feature_recipe", "head_hash", "n_frames"}
_KEYS = _LEGACY_KEYS | {"mpmm"}


def _mpmm_to_json(config: MPMMConfig) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    data["temporal_kwargs"] = dict(config.temporal_kwargs)
    return data


def _mpmm_from_json(data: Mapping[str, Any]) -> MPMMConfig:
    """Inverse of ``_mpmm_to_json`` (JSON lists become the config's tuples).

    Raises:
        ValueError: an unknown field (the message lists the valid ones) or an invalid value.
    """
    known = {f.name for f in dataclasses.fields(MPMMConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown MPMM settings {unknown} in a store recipe; valid: {', '.join(sorted(known))}")
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
    return MPMMConfig(**values)


@dataclass(frozen=True)
class StoreRecipe:
    """What makes two prototypes comparable: the same features and the same trained head.

    Two recipes are the same when they compare equal (``==``); ``fingerprint`` hashes the JSON form
    and is recorded on every row.

    Attributes:
        feature_recipe: how the MLLM features were made: the cache's ``FeatureRecipe``, the one
            every ``VideoFeatures`` of the run's extractor carries.
        head_hash: hash of the trained head's weights and config (``head_fingerprint``).
        dim: D, the width of the stored prototypes.
        n_frames: T, the frames of a visual prototype.
        mpmm: the MPMM settings of the trained head (``head.config.mpmm``); ``PrototypeStore.query``
            matches with them unless given others.
        recorded: for a recipe read from a store written before recipes were typed, the JSON it
            records (so ``to_json`` and ``fingerprint`` stay what its rows hold); None otherwise.
            Not compared.

    Raises:
        TypeError: ``feature_recipe`` is not a ``FeatureRecipe`` or ``mpmm`` not an ``MPMMConfig``.
    """

    feature_recipe: FeatureRecipe
    head_hash: str
    dim: int
    n_frames: int
    mpmm: MPMMConfig = field(default_factory=MPMMConfig)
    recorded: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.feature_recipe, FeatureRecipe):
            raise TypeError(
                f"StoreRecipe.feature_recipe must be a FeatureRecipe (the cache's or extractor's recipe), "
                f"got {type(self.feature_recipe).__name__}"
            )
        if not isinstance(self.mpmm, MPMMConfig):
            raise TypeError(
                f"StoreRecipe.mpmm must be an MPMMConfig (head.config.mpmm), got {type(self.mpmm).__name__}"
            )

    def to_json(self) -> str:
        """The JSON the store records (the recorded text, for a recipe read from an older store)."""
        if self.recorded is not None:
            return self.recorded
        data = {
            "dim": self.dim,
            "feature_recipe": self.feature_recipe.to_json(),
            "head_hash": self.head_hash,
            "mpmm": _mpmm_to_json(self.mpmm),
            "n_frames": self.n_frames,
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> StoreRecipe:
        """Inverse of ``to_json``; also reads the recipe row of a store written before recipes were typed
        (its ``feature_recipe`` every field of the ``FeatureRecipe``, no ``mpmm``): its MPMM settings are
        then ``MPMMConfig()``, what its queries used by default, and ``recorded`` keeps the text.

        Raises:
            ValueError: unknown or missing keys, or a feature recipe or MPMM settings that do not read
                (the message says which).
        """
        data = json.loads(text)
        keys = set(data)
        if keys not in (_KEYS, _LEGACY_KEYS):
            raise InputError(
                f"a store recipe has the keys {sorted(_KEYS)} (or, written by an older fsar, {sorted(_LEGACY_KEYS)}); "
                f"this one has {sorted(keys)}"
            )
        try:
            feature_recipe = FeatureRecipe.from_json(data["feature_recipe"])
        except (TypeError, ValueError) as error:
            raise InputError(f"the store's feature recipe does not read as a FeatureRecipe: {error}") from None
        legacy = "mpmm" not in data
        return cls(
            feature_recipe=feature_recipe,
            head_hash=data["head_hash"],
            dim=data["dim"],
            n_frames=data["n_frames"],
            mpmm=MPMMConfig() if legacy else _mpmm_from_json(data["mpmm"]),
            recorded=text if legacy else None,
        )

    @property
    def fingerprint(self) -> str:
        """Short stable hash of the whole recipe (stored on every row)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def describe(self) -> str:
        """One line: model, head, widths and the MPMM cues, τ and weighting."""
        mpmm = f"{'+'.join(self.mpmm.cues)} tau={self.mpmm.tau:g} {self.mpmm.selection}"
        return (
            f"model={self.feature_recipe.model_id}, head={self.head_hash[:12]}, dim={self.dim}, "
            f"frames={self.n_frames}, mpmm={mpmm}"
        )


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
