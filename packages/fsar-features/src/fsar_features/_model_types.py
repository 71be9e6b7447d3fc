"""Which feature backend loads a checkpoint: read from its ``config.json``, never guessed from its name.

A checkpoint's name says little (a fine-tune or a local folder may be called anything); its
``config.json`` names the transformers architecture in ``model_type``. Each family module registers
the model types its backend loads (``register_model_type``) next to the backend itself, so this table
grows with the backends and holds no family knowledge of its own.

Older snapshots of ``llava-hf/LLaVA-NeXT-Video-7B-hf`` declared ``model_type: "llava_next"`` (the hub
history fixed it to ``llava_next_video``); ``llava_next`` also names the image-only LLaVA-NeXT models,
so it is not mapped: such a checkpoint needs its backend chosen explicitly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fsar_metric.errors import InputError, MissingFileError
from fsar_metric.registry import NoDeclared, Registry

__all__ = ["backend_for_model", "list_model_types", "register_model_type"]

#: ``config.json`` model type → the name of the feature backend that loads it.
MODEL_TYPES: Registry[str, NoDeclared] = Registry("model type")


def register_model_type(model_type: str, backend: str) -> None:
    """Declare that checkpoints whose ``config.json`` says ``model_type`` load with ``backend``.

    Raises:
        ValueError: ``model_type`` is already registered.
    """
    MODEL_TYPES.register(model_type, backend)


def list_model_types() -> dict[str, str]:
    """The supported ``config.json`` model types and their backends, sorted by model type.

    Example:
        >>> list_model_types()
        {'llava_next_video': 'llava-next-video', 'video_llava': 'video-llava'}
    """
    return {name: MODEL_TYPES.get(name) for name in MODEL_TYPES}


def _config_file(ref: str) -> Path:
    """The checkpoint's ``config.json``: in the folder, or in the Hugging Face cache for a hub id.

    Raises:
        FileNotFoundError: one sentence naming the checkpoint and why there is no config to read.
    """
    local = Path(ref).expanduser()
    looks_local = local.exists() or ref.startswith((".", "/", "~")) or ref.count("/") > 1  # hub ids are "org/name"
    if looks_local:
        if (local / "config.json").is_file():
            return local / "config.json"
        what = "has no config.json" if local.is_dir() else "does not exist"
        raise MissingFileError(f"cannot choose a feature backend for {ref!r}: the folder {what}")
    from transformers.utils import cached_file

    try:
        found = cached_file(ref, "config.json", _raise_exceptions_for_missing_entries=False)
    except OSError as error:  # a malformed hub id, or a failed download
        raise MissingFileError(
            f"cannot choose a feature backend for {ref!r}: reading its config.json failed ({error})"
        ) from None
    if found is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        why = "downloads are off (HF_HUB_OFFLINE=1)" if offline else "the hub has no config.json for it"
        raise MissingFileError(
            f"cannot choose a feature backend for {ref!r}: it is neither a local checkpoint folder nor in the "
            f"Hugging Face cache, and {why}"
        )
    return Path(found)


def backend_for_model(model: str | os.PathLike[str]) -> str:
    """The registered backend that loads ``model``, from the ``model_type`` in its ``config.json``.

    Args:
        model: a checkpoint folder, or a hub id (read from the Hugging Face cache; downloaded only when
            downloads are allowed).

    Returns:
        A backend name (``list_backends()``), e.g. ``video-llava`` for ``model_type: "video_llava"``.

    Raises:
        FileNotFoundError: no ``config.json`` to read (one sentence naming the checkpoint and why).
        ValueError: the ``model_type`` is missing or has no backend; the message names the type, the
            checkpoint and the supported types, and says that ``--backend`` chooses one explicitly.

    Example:
        >>> import json, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> _ = Path(folder, "config.json").write_text(json.dumps({"model_type": "llava_next_video"}))
        >>> backend_for_model(folder)
        'llava-next-video'
    """
    ref = str(model)
    path = _config_file(ref)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(
            f"cannot choose a feature backend for {ref!r}: {path} is not readable JSON ({error})"
        ) from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type in MODEL_TYPES:
        return MODEL_TYPES.get(model_type)
    supported = ", ".join(f"{t} → {b}" for t, b in list_model_types().items())
    found = f"model_type {model_type!r}" if model_type is not None else "no model_type"
    raise InputError(
        f"checkpoint {ref!r} has {found} in its config.json, which no feature backend supports "
        f"(supported model types: {supported}); choose a backend explicitly with --backend"
    )
