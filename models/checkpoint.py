"""Checkpoints: a model's ``state_dict`` plus metadata of primitives, written atomically.

A checkpoint file is a ``torch.save`` of a plain dict::

    {"format": "rts-checkpoint/1",
     "meta": {"encoder": ..., "tasks": ..., "decoder_width": ..., "epoch": ..., "versions": ...},
     "model": state_dict,
     "train_state": {...}}          # optional: optimizer, weighting, RNG, records (resume)

Everything in it is a tensor or a primitive, so it loads with ``torch.load(weights_only=True)``:
a file that holds any pickled object is refused instead of executed.
"""

from __future__ import annotations

import os
import pickle
import platform
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from rts.models.mtl import MultiTaskModel, build_model
from rts.tasks.io import atomic_path
from rts.tasks.registry import canonical_tasks

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "read_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "rts-checkpoint/1"

_PRIMITIVES = (str, int, float, bool, type(None))


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": str(torch.__version__)}
    for dist in ("torchvision", "robust-task-search"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "unknown"
    return out


def _check_primitives(value: Any, where: str) -> None:
    """Raise ``ValueError`` naming the first value in ``meta`` that is not a primitive."""
    # Exact types: numpy scalars and str subclasses (TorchVersion) would pickle as objects.
    if type(value) in _PRIMITIVES:
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_primitives(item, f"{where}[{i}]")
        return
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise ValueError(f"checkpoint meta keys must be strings, got {key!r} in {where}")
            _check_primitives(item, f"{where}.{key}")
        return
    raise ValueError(
        f"checkpoint meta must hold primitives (str, int, float, bool, None, list, dict), "
        f"got {type(value).__name__} at {where}"
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    model: MultiTaskModel,
    meta: Mapping[str, Any] | None = None,
    *,
    train_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and ``meta`` to ``path`` atomically; returns the path.

    Args:
        path: target file (its folder is created).
        model: the model; its :attr:`~models.mtl.MultiTaskModel.config` goes into the meta.
        meta: extra primitives (epoch, weighting, data spec, ...). Tensors, numpy values or
            objects raise ``ValueError``: they could not be loaded with ``weights_only=True``.
        train_state: optional optimizer / weighting / RNG state for resuming (tensors allowed).
    """
    full_meta = {**dict(meta or {}), **model.config}
    full_meta.setdefault("versions", _versions())
    full_meta.setdefault("saved_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    _check_primitives(full_meta, "meta")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "meta": full_meta, "model": state}
    if train_state is not None:
        payload["train_state"] = dict(train_state)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """The raw checkpoint dict, loaded with ``weights_only=True`` and checked for its format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unsafe content, a truncated file, not a torch file, ...
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        unsafe = [line for line in lines if "Unsupported global" in line]
        # torch 2.3 says "Unsupported class X" at the end of its advice to load unsafely.
        unsafe += [
            line[line.index("Unsupported class") :] for line in lines if "Unsupported class" in line
        ]
        if isinstance(exc, pickle.UnpicklingError) and unsafe:
            raise ValueError(
                f"refusing checkpoint {str(path)!r}: it holds pickled objects that "
                f"weights_only=True does not load ({unsafe[0]})"
            ) from None
        raise ValueError(
            f"cannot read checkpoint {str(path)!r} (not a torch file, or damaged): "
            f"{type(exc).__name__}: {lines[-1] if lines else ''}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"{str(path)!r} is not an rts checkpoint (format {found!r}, "
            f"expected {CHECKPOINT_FORMAT!r})"
        )
    return payload


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    encoder: str | None = None,
    tasks: str | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[MultiTaskModel, dict[str, Any]]:
    """Rebuild the model saved at ``path``; returns ``(model in eval mode, meta)``.

    Args:
        path: a file written by :func:`save_checkpoint`.
        encoder: if given, the checkpoint's encoder must be this one.
        tasks: if given, the checkpoint's task set must equal this one (order-free).
        map_location: where the weights go (``"cpu"``, a ``torch.device``).

    Raises:
        ValueError: unsafe or foreign file, or encoder / tasks other than asked for.
    """
    payload = read_checkpoint(path, map_location=map_location)
    meta = payload["meta"]
    if encoder is not None and meta["encoder"] != encoder:
        raise ValueError(
            f"checkpoint {str(path)!r} has encoder {meta['encoder']!r}, not {encoder!r}"
        )
    if tasks is not None and canonical_tasks(tasks) != meta["tasks"]:
        raise ValueError(
            f"checkpoint {str(path)!r} has tasks {meta['tasks']!r}, not {canonical_tasks(tasks)!r}"
        )
    model = build_model(meta["encoder"], meta["tasks"], decoder_width=meta["decoder_width"])
    model.load_state_dict(payload["model"], strict=True)
    model.to(map_location)
    return model.eval(), meta
