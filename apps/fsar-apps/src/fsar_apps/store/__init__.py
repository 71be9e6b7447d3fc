"""The LanceDB prototype store: register actions from a few clips, classify new videos."""

from fsar_apps.store._head import action_prototype, check_store_head, encode_query, head_fingerprint
from fsar_apps.store._schema import StoreRecipe, prototype_model
from fsar_apps.store._store import (
    ActionInfo,
    Match,
    PrototypeStore,
    QueryResult,
    StoreMismatchError,
    calibrate_threshold,
)

__all__ = [
    "ActionInfo",
    "Match",
    "PrototypeStore",
    "QueryResult",
    "StoreMismatchError",
    "StoreRecipe",
    "action_prototype",
    "calibrate_threshold",
    "check_store_head",
    "encode_query",
    "head_fingerprint",
    "prototype_model",
]
