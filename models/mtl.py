"""The hard-sharing multi-task model: one encoder, one decoder per task, normalisation inside.

Images enter in ``[0, 1]`` and are normalised with ImageNet's mean and std by the model itself,
so attacks work in pixel space and ``eps = 8/255`` means what the paper means. ``forward`` can
run any subset of the trained tasks (the paper's Figure 1 enables tasks one after another on one
model); the encoder runs once per call.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from rts.models.decoders import Decoder
from rts.models.encoders import build_encoder, get_encoder
from rts.tasks.registry import canonical_tasks, get_task, parse_tasks

__all__ = [
    "DEFAULT_DECODER_WIDTH",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MultiTaskModel",
    "build_model",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_DECODER_WIDTH = 256
"""MTRobust's decoder width (256→128→64→48→32); use 8–32 for tiny CPU models."""


class MultiTaskModel(nn.Module):
    """Shared encoder + :class:`~models.decoders.Decoder` per task (``nn.ModuleDict``).

    Args:
        encoder: module mapping a normalised image ``[N, 3, H, W]`` to ``[N, channels, h, w]``.
        tasks: task keys (``"sdn"``); stored in the registry's order so ``"ds"`` == ``"sd"``.
        channels: the encoder's feature channels.
        stride: the encoder's output stride.
        decoder_width: base width of every decoder.
        encoder_name: registry name, recorded in checkpoints (``"custom"`` for other modules).
    """

    def __init__(
        self,
        encoder: nn.Module,
        tasks: str | Iterable[str],
        *,
        channels: int,
        stride: int,
        decoder_width: int = DEFAULT_DECODER_WIDTH,
        encoder_name: str = "custom",
    ) -> None:
        super().__init__()
        self.tasks = canonical_tasks(tasks)
        self.encoder_name = encoder_name
        self.decoder_width = int(decoder_width)
        self.encoder = encoder
        self.decoders = nn.ModuleDict(
            {
                k: Decoder(channels, get_task(k).channels, stride=stride, width=decoder_width)
                for k in self.tasks
            }
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    @property
    def config(self) -> dict[str, Any]:
        """Primitives that rebuild this architecture with :func:`build_model`."""
        return {
            "encoder": self.encoder_name,
            "tasks": self.tasks,
            "decoder_width": self.decoder_width,
        }

    def set_output_stats(self, stats: Mapping[str, tuple[Tensor, Tensor]]) -> None:
        """Set the output map ``shift + scale · head`` of the decoders of ``stats``' tasks
        (``{task: (shift [C], scale [C])}``, e.g. :func:`rts.models.output.fit_output_stats`)."""
        extra = [k for k in stats if k not in self.tasks]
        if extra:
            raise ValueError(f"output stats for task(s) {''.join(extra)!r} not in {self.tasks!r}")
        for k, (shift, scale) in stats.items():
            self.decoders[k].set_output_stats(shift, scale)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The last shared layer's weight (GradNorm measures task gradient norms there)."""
        weights = [p for p in self.encoder.parameters() if p.dim() > 1]
        return weights[-1:]

    def select(self, tasks: str | Iterable[str] | None) -> str:
        """Validate a subset of this model's tasks (``None`` = all), keeping the order given."""
        if tasks is None:
            return self.tasks
        keys = parse_tasks(tasks)
        missing = [k for k in keys if k not in self.tasks]
        if missing:
            raise ValueError(
                f"task(s) {''.join(missing)!r} not in this model; choose from {self.tasks!r}"
            )
        return keys

    def forward(self, x: Tensor, tasks: str | Iterable[str] | None = None) -> dict[str, Tensor]:
        """Predictions ``{task: [N, C_task, H, W]}`` for ``x [N, 3, H, W]`` in ``[0, 1]``.

        Args:
            x: images in ``[0, 1]``; normalised here.
            tasks: the tasks to decode (any subset of :attr:`tasks`); ``None`` = all.
        """
        keys = self.select(tasks)
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images [N, 3, H, W], got shape {tuple(x.shape)}")
        size = (x.shape[-2], x.shape[-1])
        mean, std = self.mean.to(x.dtype), self.std.to(x.dtype)
        rep = self.encoder((x - mean) / std)
        return {k: self.decoders[k](rep, size) for k in keys}

    def extra_repr(self) -> str:
        return f"encoder={self.encoder_name!r}, tasks={self.tasks!r}, width={self.decoder_width}"


def build_model(
    encoder: str,
    tasks: str | Iterable[str],
    *,
    decoder_width: int = DEFAULT_DECODER_WIDTH,
    weights_path: str | os.PathLike[str] | None = None,
    seed: int | None = None,
) -> MultiTaskModel:
    """A multi-task model with a registered encoder and one decoder per task.

    Args:
        encoder: encoder registry name (``"resnet18"``).
        tasks: task keys (``"sdn"``).
        decoder_width: decoders' base width (256 = MTRobust).
        weights_path: optional local encoder ``state_dict`` (``weights_only=True``).
        seed: if given, the random init is drawn from this seed without touching the global
            RNG (the same seed gives the same model, and the same encoder and per-task decoder
            whatever the other tasks are); ``None`` uses the global RNG.
    """
    spec = get_encoder(encoder)
    keys = canonical_tasks(tasks)
    if decoder_width < 1:
        raise ValueError(f"decoder_width must be >= 1, got decoder_width={decoder_width}")

    def make() -> MultiTaskModel:
        return MultiTaskModel(
            build_encoder(encoder, weights_path=weights_path),
            keys,
            channels=spec.channels,
            stride=spec.stride,
            decoder_width=decoder_width,
            encoder_name=encoder,
        )

    if seed is None:
        return make()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
        # Each head gets its own seed, so a task's initial decoder (and the encoder) is the same
        # whichever other tasks the model has: subsets trained from one seed differ only by
        # what their auxiliary tasks contribute, which is what a task-subset search compares.
        for k in keys:
            torch.manual_seed(zlib.crc32(f"{seed}:{k}".encode()))
            model.decoders[k] = Decoder(
                spec.channels, get_task(k).channels, stride=spec.stride, width=decoder_width
            )
        return model
