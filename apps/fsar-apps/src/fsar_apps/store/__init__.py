"""The LanceDB prototype store: register actions from a few clips, classify new videos; build,
calibrate and evaluate the store of a trained run (``build_store_from_run``, ``evaluate_store``)."""

from fsar_apps.store._head import action_prototype, check_store_head, encode_query, head_fingerprint
from fsar_apps.store._refresh import RefreshRecord
from fsar_apps.store._run import (
    StoreEvaluation,
    TrainedRun,
    build_store_from_run,
    calibrate_unknown_threshold,
    evaluate_store,
    extract_videos,
    load_trained_run,
    open_run_store,
)
from fsar_apps.store._schema import StoreRecipe, prototype_model
from fsar_apps.store._store import (
    REFRESH_MODES,
    ActionInfo,
    IndexSettings,
    IndexStatus,
    Match,
    PrototypeStore,
    QueryResult,
    StoreMismatchError,
    calibrate_threshold,
)

__all__ = [
    "REFRESH_MODES",
    "ActionInfo",
    "IndexSettings",
    "IndexStatus",
    "Match",
    "PrototypeStore",
    "QueryResult",
    "RefreshRecord",
    "StoreEvaluation",
    "StoreMismatchError",
    "StoreRecipe",
    "TrainedRun",
    "action_prototype",
    "build_store_from_run",
    "calibrate_threshold",
    "calibrate_unknown_threshold",
    "check_store_head",
    "encode_query",
    "evaluate_store",
    "extract_videos",
    "head_fingerprint",
    "load_trained_run",
    "open_run_store",
    "prototype_model",
]
