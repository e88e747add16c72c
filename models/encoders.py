"""The shared encoders: a registry of backbones that map an image to one feature map.

Every entry is a frozen :class:`EncoderSpec` that says how many channels its feature map has and
by how much it is smaller than the input (the output stride), so a decoder can be built for it
without running it. ResNets come from torchvision (random init, the same Kaiming fan-out init
MTRobust uses); Xception comes from timm when the ``timm`` extra is installed.

Truncated ResNets (``resnet18_s8``, ``resnet50_s8``) keep only the stem and the first two
stages: output stride 8 instead of 32, so a 64 px image still gives an 8×8 feature map (a full
ResNet gives 2×2, and every dense output is then painted from 4 feature vectors). They are the
small-input option of the synthetic studies (docs/models.md, "Encoders for small inputs"); the
paper's full ResNets at 256 px stay the default.

An encoder takes a *normalised* image ``[N, 3, H, W]`` and returns ``[N, C, ceil(H/s), ceil(W/s)]``
(up to rounding of each stride-2 stage); normalisation lives in :class:`models.mtl.MultiTaskModel`.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = [
    "ENCODERS",
    "EncoderSpec",
    "MissingExtraError",
    "build_encoder",
    "get_encoder",
    "load_encoder_weights",
    "register_encoder",
]


class MissingExtraError(ImportError, ValueError):
    """An optional dependency is missing; the message names the extra to install.

    It is a ``ValueError`` too, so the ``rts`` command reports it as one line (exit 2).
    """


@dataclass(frozen=True)
class EncoderSpec:
    """One registered encoder.

    Attributes:
        name: registry key (``"resnet18"``).
        channels: channels of the feature map it returns.
        stride: output stride (input size / feature size), a power of two.
        builder: zero-argument function returning the randomly initialised module.
        extra: the optional dependency group it needs (``"timm"``), or ``None``.
        cost: relative cost of one training epoch (ResNet18 = 1): forward GFLOPs at 224 px of
            the torchvision (timm for Xception) model over ResNet18's 1.81; decoders not counted.
            The search's compute accounting (:mod:`rts.search.engine.plan`) reads it.
    """

    name: str
    channels: int
    stride: int
    builder: Callable[[], nn.Module]
    extra: str | None = None
    cost: float = 1.0


ENCODERS: dict[str, EncoderSpec] = {}


def register_encoder(
    name: str, *, channels: int, stride: int, cost: float, extra: str | None = None
) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Decorator adding a builder to :data:`ENCODERS`; a duplicate name is an error."""

    def deco(builder: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        if name in ENCODERS:
            raise ValueError(f"encoder {name!r} is already registered")
        if stride < 1 or stride & (stride - 1):
            raise ValueError(f"encoder stride must be a power of two, got stride={stride}")
        if not cost > 0:
            raise ValueError(f"encoder cost must be > 0 (ResNet18 = 1), got cost={cost}")
        ENCODERS[name] = EncoderSpec(name, channels, stride, builder, extra, cost)
        return builder

    return deco


def get_encoder(name: str) -> EncoderSpec:
    """The spec of encoder ``name``; an unknown name raises ``ValueError`` listing the choices."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose from {', '.join(sorted(ENCODERS))}")
    return ENCODERS[name]


def build_encoder(name: str, *, weights_path: str | os.PathLike[str] | None = None) -> nn.Module:
    """A fresh encoder module, randomly initialised or loaded from a local weights file.

    Args:
        name: registry key.
        weights_path: optional ``state_dict`` file (e.g. torchvision's ImageNet ResNet file);
            loaded with ``weights_only=True``; classifier keys (``fc.*``) are ignored.
    """
    module = get_encoder(name).builder()
    if weights_path is not None:
        load_encoder_weights(module, weights_path)
    return module


def load_encoder_weights(module: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a local ``state_dict`` into ``module`` (strict, ``weights_only=True``).

    A ``module.`` prefix (DataParallel) is stripped and the classifier head (``fc.``,
    ``classifier.``, ``head.``) dropped, so torchvision/timm ImageNet files load as they are.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError and friends: the file is unsafe or broken
        raise ValueError(
            f"cannot load encoder weights {str(path)!r} with weights_only=True "
            f"(a plain state_dict of tensors is required): {str(exc).splitlines()[0]}"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"encoder weights {str(path)!r} hold a {type(state).__name__}, not a dict")
    target = module.net if isinstance(module, _TimmFeatures) else module
    cleaned = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        top = key.split(".")[0]
        if top in ("fc", "classifier", "head"):
            continue
        if top in _RESNET_STAGES and not hasattr(target, top):
            continue  # a stage a truncated trunk leaves out (resnet18_s8 from resnet18's file)
        cleaned[key] = value
    result = target.load_state_dict(cleaned, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"encoder weights {str(path)!r} do not match the encoder: "
            f"missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}"
        )


_RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


def _resnet_trunk(factory: Callable[..., nn.Module], stages: int = 4) -> nn.Module:
    """A torchvision ResNet without its pooling and classifier, keeping torchvision's key names.

    ``stages < 4`` keeps only the first ``stages`` residual stages (output stride
    ``2 ** (stages + 1)``): the stem and ``layer1`` give stride 4, each further stage halves.
    """
    net = factory(weights=None)
    names = ("conv1", "bn1", "relu", "maxpool", *_RESNET_STAGES[:stages])
    return nn.Sequential(OrderedDict((n, getattr(net, n)) for n in names))


def _register_resnets() -> None:
    import torchvision.models as tvm

    for name, channels, cost in (
        ("resnet18", 512, 1.0),
        ("resnet34", 512, 2.02),
        ("resnet50", 2048, 2.26),
        ("resnet101", 2048, 4.31),
        ("resnet152", 2048, 6.36),
        ("wide_resnet50_2", 2048, 6.30),
    ):
        factory = getattr(tvm, name)

        def builder(factory: Callable[..., nn.Module] = factory) -> nn.Module:
            return _resnet_trunk(factory)

        builder.__doc__ = f"torchvision {name} trunk (no avgpool/fc), random init."
        register_encoder(name, channels=channels, stride=32, cost=cost)(builder)


_register_resnets()

# Truncated trunks for small inputs: stem + layer1 + layer2 (output stride 8). Costs: forward
# GFLOPs at 224 px (torch.utils.flop_counter, multiply-adds) over ResNet18's 1.81: 0.99 and 1.81.
_TRUNCATED = (("resnet18_s8", "resnet18", 128, 0.55), ("resnet50_s8", "resnet50", 512, 1.0))


def _register_truncated() -> None:
    import torchvision.models as tvm

    for name, base, channels, cost in _TRUNCATED:
        factory = getattr(tvm, base)

        def builder(factory: Callable[..., nn.Module] = factory) -> nn.Module:
            return _resnet_trunk(factory, stages=2)

        builder.__doc__ = (
            f"torchvision {base}'s stem and first two stages (output stride 8), random init."
        )
        register_encoder(name, channels=channels, stride=8, cost=cost)(builder)


_register_truncated()


class _TimmFeatures(nn.Module):
    """A timm classifier used as a trunk: ``forward_features`` gives the last feature map."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)


@register_encoder("xception", channels=2048, stride=32, cost=4.64, extra="timm")
def _xception() -> nn.Module:
    """Xception (Chollet 2017) from timm, the paper's S6 encoder family; needs the timm extra."""
    try:
        import timm
    except ImportError:
        raise MissingExtraError(
            "encoder 'xception' needs timm: pip install \"robust-task-search[timm]\""
        ) from None
    for timm_name in ("legacy_xception", "xception"):  # renamed in timm 0.9
        if timm.is_model(timm_name):
            net = timm.create_model(timm_name, pretrained=False, num_classes=0, global_pool="")
            return _TimmFeatures(net)
    raise MissingExtraError(
        f"timm {timm.__version__} has no xception model; "
        'pip install --upgrade "robust-task-search[timm]"'
    )
