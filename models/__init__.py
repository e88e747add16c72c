"""Multi-task models: encoders, decoders, the hard-sharing model, loss weighting, training,
checkpoints. See docs/models.md."""

from rts.models.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from rts.models.decoders import Decoder, decoder_widths
from rts.models.device import resolve_device
from rts.models.encoders import (
    ENCODERS,
    EncoderSpec,
    MissingExtraError,
    build_encoder,
    get_encoder,
    register_encoder,
)
from rts.models.mtl import DEFAULT_DECODER_WIDTH, MultiTaskModel, build_model
from rts.models.output import (
    OUTPUT_INITS,
    apply_output_init,
    fit_output_stats,
    standardise_outputs,
)
from rts.models.train import (
    SCHEDULES,
    EpochRecord,
    NonFiniteLossError,
    Schedule,
    evaluate,
    precise_batchnorm,
    records_frame,
    train,
)
from rts.models.weighting import (
    OPTIMAL_AUX_WEIGHTS,
    WEIGHTINGS,
    GradNormWeighting,
    LossWeighting,
    StaticWeighting,
    UncertaintyWeighting,
    WeightingSpec,
    make_weighting,
    static_weights,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULT_DECODER_WIDTH",
    "ENCODERS",
    "OPTIMAL_AUX_WEIGHTS",
    "OUTPUT_INITS",
    "SCHEDULES",
    "WEIGHTINGS",
    "Decoder",
    "EncoderSpec",
    "EpochRecord",
    "GradNormWeighting",
    "LossWeighting",
    "MissingExtraError",
    "MultiTaskModel",
    "NonFiniteLossError",
    "Schedule",
    "StaticWeighting",
    "UncertaintyWeighting",
    "WeightingSpec",
    "apply_output_init",
    "build_encoder",
    "build_model",
    "decoder_widths",
    "evaluate",
    "fit_output_stats",
    "get_encoder",
    "load_checkpoint",
    "make_weighting",
    "precise_batchnorm",
    "read_checkpoint",
    "records_frame",
    "register_encoder",
    "resolve_device",
    "save_checkpoint",
    "standardise_outputs",
    "static_weights",
    "train",
]
