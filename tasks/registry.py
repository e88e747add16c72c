"""The 11 Taskonomy tasks of the paper, keyed by its letters ``s d D n k K e E p r A``.

Each task is a frozen :class:`TaskSpec`: the Taskonomy folder (``domain``), the number of output
channels, the training loss (cross-entropy for ``s``, L1 for the rest) and the per-example error
``f_i`` that relative task vulnerability is measured with (``1 - mIoU`` for ``s``, per-pixel mean
squared error for the rest). How a label file is decoded lives in :mod:`tasks.encoding`; the loss
and error functions in :mod:`tasks.losses`.

Labels travel as ``dict[str, Tensor]`` keyed by task key. Invalid pixels are carried *inside* the
label, so no separate mask has to travel with it:

* dense regression labels are float ``[N, C, H, W]`` with ``NaN`` where Taskonomy marks the pixel
  invalid (e.g. depth beyond the sensor range);
* segmentation labels are int64 ``[N, H, W]`` class ids in ``[0, 18)`` with :data:`SEG_IGNORE`
  (255) where the pixel is unlabelled.

Task sets are written as strings of keys (``"sdn"``) in the CLI, configs and results.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

LossKind = Literal["ce", "l1"]
ErrorKind = Literal["1-miou", "mse"]

SEG_IGNORE = 255
"""Class id of unlabelled segmentation pixels (excluded from loss and error)."""

SEG_CLASSES = 18
"""Output channels of the segmentation decoder (MTRobust's ``segmentsemantic``: 18)."""


@dataclass(frozen=True)
class TaskSpec:
    """One Taskonomy task.

    Attributes:
        key: the paper's letter (``"s"``).
        name: human-readable name.
        domain: Taskonomy folder / domain name on disk (``"segment_semantic"``). For the
            autoencoder it is ``"rgb"``: the label is the image itself.
        channels: decoder output channels.
        loss: ``"ce"`` (pixel-wise cross-entropy over ``channels`` classes) or ``"l1"``.
        error: the error ``f_i`` of relative task vulnerability: ``"1-miou"`` (one minus the
            per-image mean IoU) or ``"mse"`` (per-pixel mean squared error over valid pixels).
        depth_masked: whether Taskonomy's validity mask for this task comes from the euclidean
            depth (MTRobust's ``depth_mask=True`` tasks) rather than from the label itself.
        flip_negate_channel: the channel whose sign flips under a horizontal flip (the x
            component of surface normals), or ``None``.
    """

    key: str
    name: str
    domain: str
    channels: int
    loss: LossKind
    error: ErrorKind
    depth_masked: bool = False
    flip_negate_channel: int | None = None

    @property
    def is_segmentation(self) -> bool:
        """True for the classification-per-pixel task (int64 labels, cross-entropy)."""
        return self.loss == "ce"


TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to the registry; a duplicate key is an error (never silently replaced)."""
    if spec.key in TASKS:
        raise ValueError(f"task {spec.key!r} is already registered")
    if len(spec.key) != 1:
        raise ValueError(f"task keys are single letters, got {spec.key!r}")
    TASKS[spec.key] = spec
    return spec


for _spec in (
    TaskSpec("s", "semantic segmentation", "segment_semantic", SEG_CLASSES, "ce", "1-miou"),
    TaskSpec("d", "z-buffer depth", "depth_zbuffer", 1, "l1", "mse"),
    TaskSpec("D", "euclidean depth", "depth_euclidean", 1, "l1", "mse", depth_masked=True),
    TaskSpec("n", "surface normals", "normal", 3, "l1", "mse", True, flip_negate_channel=0),
    TaskSpec("k", "2D keypoints", "keypoints2d", 1, "l1", "mse"),
    TaskSpec("K", "3D keypoints", "keypoints3d", 1, "l1", "mse", depth_masked=True),
    TaskSpec("e", "texture edges", "edge_texture", 1, "l1", "mse"),
    TaskSpec("E", "occlusion edges", "edge_occlusion", 1, "l1", "mse", depth_masked=True),
    TaskSpec("p", "principal curvature", "principal_curvature", 2, "l1", "mse", True),
    TaskSpec("r", "reshading", "reshading", 1, "l1", "mse", depth_masked=True),
    TaskSpec("A", "autoencoder", "rgb", 3, "l1", "mse"),
):
    register_task(_spec)

TASK_KEYS: str = "".join(TASKS)
"""All task keys in the paper's order: ``"sdDnkKeEprA"``."""


def get_task(key: str) -> TaskSpec:
    """The spec of task ``key``; an unknown key raises ``ValueError`` listing the valid keys."""
    try:
        return TASKS[key]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown task {key!r}; choose from {', '.join(TASKS)} "
            f"({'; '.join(f'{k}={s.name}' for k, s in TASKS.items())})"
        ) from None


def parse_tasks(tasks: str | Iterable[str]) -> str:
    """Normalise a task set to its canonical string, e.g. ``"sdn"``, ``["s", "d"]`` → ``"sd"``.

    Accepts a string of keys (commas and spaces are ignored: ``"s,d"``) or an iterable of keys.
    Keys keep the order given; duplicates and unknown keys raise ``ValueError``; so does an
    empty set.
    """
    if isinstance(tasks, str):
        keys = [c for c in tasks if c not in ", "]
    else:
        keys = []
        for item in tasks:
            if not isinstance(item, str):
                raise ValueError(f"task keys are strings, got {item!r}")
            keys.extend(c for c in item if c not in ", ")
    if not keys:
        raise ValueError(f"empty task set {tasks!r}; choose keys from {TASK_KEYS}")
    seen: set[str] = set()
    for k in keys:
        get_task(k)
        if k in seen:
            raise ValueError(f"task {k!r} appears twice in {tasks!r}")
        seen.add(k)
    return "".join(keys)


def canonical_tasks(tasks: str | Iterable[str]) -> str:
    """Like :func:`parse_tasks` but sorted in the registry's order, so equal sets compare equal."""
    keys = parse_tasks(tasks)
    return "".join(k for k in TASKS if k in keys)
