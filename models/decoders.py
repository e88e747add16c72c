"""Per-task upsampling decoders in the style of Taskonomy / MTRobust (peers.md §2 "Model").

MTRobust's dense decoder takes the encoder's stride-32 feature map through five stages of
``ConvTranspose2d(k=2, s=2) → BN → ReLU`` (each but the last followed by
``Conv3x3 → BN → ReLU``) with 256, 128, 64, 48, 32 channels, then a ``Conv3x3`` to the task's
channels. Here the widths scale with one number, ``width`` (256 reproduces MTRobust; 8–32 gives
tiny CPU models), and the number of stages follows the encoder's output stride (one per factor
of two). The output always has the input's height and width: a ResNet's feature map covers
``ceil(H/32)·32`` rows, so the upsampled map is cropped to ``H×W`` (which keeps every output pixel
aligned with its input pixel); an encoder that rounds down is resized bilinearly instead.

The head's output passes through a fixed per-channel affine map, ``shift + scale · head``
(buffers, not trained; the identity by default). :func:`rts.models.output.standardise_outputs`
sets it from the training labels, so a head predicts standardised labels (docs/models.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MTROBUST_RATIOS", "Decoder", "decoder_widths"]

MTROBUST_RATIOS: tuple[float, ...] = (1.0, 1 / 2, 1 / 4, 3 / 16, 1 / 8)
"""Stage widths of MTRobust's decoder relative to its first (256, 128, 64, 48, 32)."""

MIN_STAGE_WIDTH = 8
"""No stage is narrower than this (or than the base width, if smaller)."""


def decoder_widths(width: int, stages: int) -> tuple[int, ...]:
    """Channel widths of the ``stages`` upsampling stages for base ``width``.

    Five stages reproduce MTRobust's ratios (``width=256`` → 256, 128, 64, 48, 32). With fewer
    stages the middle ones are dropped (MTRobust's ``downscale=2`` variant skips 48); the last
    stage always has ``width/8`` channels; extra stages keep halving. Never below
    ``min(width, 8)`` channels: a stage of one or two channels is often all-dead after its ReLU
    at initialisation, which makes a tiny model's output independent of its input (zero input
    gradients, so no attack and no first-order bound can measure anything).
    """
    if width < 1:
        raise ValueError(f"decoder width must be >= 1, got width={width}")
    if stages < 1:
        raise ValueError(f"a decoder needs at least one upsampling stage, got stages={stages}")
    if stages <= len(MTROBUST_RATIOS):
        ratios = (*MTROBUST_RATIOS[: stages - 1], MTROBUST_RATIOS[-1])
    else:
        extra = tuple(MTROBUST_RATIOS[-1] / 2**i for i in range(1, stages - 4))
        ratios = MTROBUST_RATIOS + extra
    floor = min(width, MIN_STAGE_WIDTH)
    return tuple(max(floor, round(width * r)) for r in ratios)


class Decoder(nn.Module):
    """Upsampling decoder from the shared feature map to one task's dense output.

    Args:
        in_channels: channels of the encoder's feature map.
        out_channels: the task's output channels (18 logits for ``s``, 1 for depth, ...).
        stride: the encoder's output stride (a power of two ≥ 2): one stage per factor 2.
        width: base width; stage ``i`` has ``decoder_widths(width, log2(stride))[i]`` channels.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int = 32, width: int = 256
    ) -> None:
        super().__init__()
        if stride < 2 or stride & (stride - 1):
            raise ValueError(f"decoder stride must be a power of two >= 2, got stride={stride}")
        stages = int(math.log2(stride))
        widths = decoder_widths(width, stages)
        layers: list[nn.Module] = []
        prev = in_channels
        for i, w in enumerate(widths):
            layers += [nn.ConvTranspose2d(prev, w, 2, 2), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i < stages - 1:
                layers += [nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            prev = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(prev, out_channels, 3, padding=1)
        self.widths = widths
        self.register_buffer("out_shift", torch.zeros(out_channels))
        self.register_buffer("out_scale", torch.ones(out_channels))
        self._init_weights()

    def set_output_stats(self, shift: Tensor, scale: Tensor) -> None:
        """Make the output ``shift + scale · head`` (per channel, ``[C]`` each; ``scale > 0``)."""
        shift = torch.as_tensor(shift, dtype=torch.float32).reshape(-1)
        scale = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
        channels = self.out_shift.numel()
        if shift.numel() != channels or scale.numel() != channels:
            raise ValueError(
                f"output stats need {channels} value(s) per channel, got shift {shift.numel()} "
                f"and scale {scale.numel()}"
            )
        if not (torch.isfinite(shift).all() and torch.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError(f"output stats must be finite with scale > 0, got scale={scale}")
        self.out_shift.copy_(shift)
        self.out_scale.copy_(scale)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Checkpoints written before the output affine existed load as the identity.
        for name, fill in (("out_shift", 0.0), ("out_scale", 1.0)):
            state_dict.setdefault(prefix + name, torch.full_like(getattr(self, name), fill))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _init_weights(self) -> None:
        """MTRobust's init for the hidden layers: convs ~ N(0, sqrt(2 / (k·k·out))), BN 1 / 0.

        The output conv keeps PyTorch's default (fan-in) init. MTRobust's fan-out init there
        starts every prediction with a standard deviation of about 5 (for one output channel),
        which 150 epochs forget but which dominates a short run: validation errors first rise.
        """
        for m in self.modules():
            if m is self.head:
                continue
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, rep: Tensor, size: tuple[int, int]) -> Tensor:
        """``rep [N, C, h, w]`` → ``[N, out_channels, *size]``."""
        x = self.head(self.body(rep))
        c = x.shape[1]
        x = torch.addcmul(
            self.out_shift.to(x.dtype).view(1, c, 1, 1),
            self.out_scale.to(x.dtype).view(1, c, 1, 1),
            x,
        )
        h, w = x.shape[-2:]
        if (h, w) == tuple(size):
            return x
        if h >= size[0] and w >= size[1]:
            return x[..., : size[0], : size[1]]
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
