"""`attention-fusion` (Guan et al. 2023): spatial attention + global/local fusion.

Loss: L = L_c + α·L_r + β·L_cb (SPEC §1), pairs formed within the batch. The defaults
depart from the paper by measurement (graded similarity of the finding sets, margin
√(2k), bit balance, a pull that stops at 4 bits, 2 epochs of the BCE alone, then
the code terms ramped in over 2 epochs, and after training the codes rotated by ITQ on the
training films, ``models.code_rotation``; ``docs/design.md``); ``--param paper=1`` is the paper's.
The hash layer's activation is ``config.hash_activation`` (``models.hash_head``);
with ``tanh-continuation`` the epoch hook raises its scale β by HashNet's
schedule (1 + γ·step)^power (parameters ``scale_gamma``, ``scale_power``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cxrhash.config import TrainConfig
from cxrhash.losses import attention_fusion_loss
from cxrhash.methods.base import EpochInfo, LossContext, Method, register_method
from cxrhash.methods.common import set_hash_scale
from cxrhash.methods.continuation import hashnet_scale
from cxrhash.models.attention_fusion import AttentionFusionNet
from cxrhash.models.output import HashOutput

DEFAULTS = {
    "scale_gamma": 0.005,
    "scale_power": 0.5,
    "graded": 1.0,  # 1: Jaccard similarity of the finding sets instead of "shares any" (0)
    "balance": 0.1,  # weight of the bit-balance term Σ_bits (batch mean of f)²
    "decorrelation": 0.0,  # weight of the mean squared correlation between bits
    "geometry": 0.0,  # weight of the term asking code pair cosines to follow the embedding's
    "code_pairs": 0.0,  # 1: L_c on sign(f), gradient straight through
    "clip_pairs": 0.0,  # 1: L_c on clamp(f, −1, 1)
    "classify_codes": 0.0,  # 1: the BCE classifier reads sign(f), gradient straight through
    "attention_replicate": 0.0,  # 1: the attention's 3×3 fusion conv pads by replication
    "margin_scale": 2.0,  # m = √(margin_scale·k) unless --margin sets m itself
    "pull_bits": 4.0,  # h > 0: similar pairs are pulled only to within D = 2√h (h bits apart)
    "ramp_epochs": 2.0,  # R > 0: the code terms' weight rises linearly from 0 to 1 over R epochs
    # D > 0: the first D epochs train the BCE alone, then the ramp starts (any optimiser)
    "delay_epochs": 2.0,
    "itq": 1.0,  # 1: after training, rotate the codes by ITQ on the training films
    "paper": 0.0,  # 1: the paper's loss (PAPER_PARAMS) for every parameter not given explicitly
}
# The paper's loss (SPEC §1 with its suggested margin √k); the defaults above depart from it
# by measurement (docs/design.md, "Defaults that depart from the papers").
PAPER_PARAMS = {
    "graded": 0.0,
    "margin_scale": 1.0,
    "pull_bits": 0.0,
    "ramp_epochs": 0.0,
    "delay_epochs": 0.0,
    "balance": 0.0,
    "itq": 0.0,
}


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """The attention-fusion network for ``config`` (backbone, bits, ablation variant)."""
    params = ATTENTION_FUSION.params(config)
    return AttentionFusionNet(
        bits=config.bits,
        num_classes=num_classes,
        backbone=config.backbone,
        feature_stage=config.feature_stage,
        variant=config.variant,
        backbone_weights=config.backbone_weights,
        hash_activation=config.hash_activation,
        classify_codes=bool(params["classify_codes"]),
        attention_padding="replicate" if params["attention_replicate"] else "zeros",
    )


def code_weight(
    context: LossContext | None, ramp_epochs: float, delay_epochs: float = 0.0
) -> float:
    """Weight of the code terms, per step: 0 for the first ``delay_epochs`` epochs (the BCE
    alone), then rising linearly to 1 over ``ramp_epochs`` (at once without a ramp); 1 when
    neither is set or outside training. In epochs, not in shares of the run, so a run
    resumed with more ``--epochs`` follows the same schedule as an uninterrupted one.

    Per step, not per epoch, so the loss grows smoothly and the engine's
    divergence guard (a loss > 10 × its recent median) does not mistake the
    schedule for an explosion.
    """
    if (ramp_epochs <= 0 and delay_epochs <= 0) or context is None or context.epoch is None:
        return 1.0
    done = context.epochs_done - max(delay_epochs, 0.0)
    if done < 0:
        return 0.0
    return 1.0 if ramp_epochs <= 0 else min(1.0, done / ramp_epochs)


def recipe(config: TrainConfig) -> dict[str, float]:
    """The method's parameters: defaults, or the paper's with ``paper=1``, then explicit ones.

    The default delay (the BCE alone for 2 epochs) applies with every optimiser: without it
    the code terms can hold the network at the label prior before it has learned the
    findings, with Adam at 128 px and with SGD at 64 px and 64 bits (``docs/design.md``).
    """
    p = ATTENTION_FUSION.params(config)
    if p["paper"]:
        p.update({k: v for k, v in PAPER_PARAMS.items() if k not in config.method_params})
    return p


def margin_of(out: HashOutput, p: dict[str, float]) -> float:
    """m = √(margin_scale·k) for the k units of ``out`` (the paper's suggestion: √k)."""
    return math.sqrt(p["margin_scale"] * out.hash.shape[1])


def loss(
    out: HashOutput,
    labels: torch.Tensor,
    config: TrainConfig,
    context: LossContext | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Joint contrastive + quantisation + BCE loss with the config's α, β, margin and params."""
    p = recipe(config)
    return attention_fusion_loss(
        out,
        labels,
        alpha=config.alpha,
        beta=config.beta,
        margin=config.margin if config.margin is not None else margin_of(out, p),
        graded=bool(p["graded"]),
        balance=p["balance"],
        decorrelation=p["decorrelation"],
        geometry=p["geometry"],
        code_pairs=bool(p["code_pairs"]),
        clip_pairs=bool(p["clip_pairs"]),
        pull_margin=2.0 * math.sqrt(p["pull_bits"]),
        code_weight=code_weight(context, p["ramp_epochs"], p["delay_epochs"]),
    )


def on_epoch(model: nn.Module, info: EpochInfo, config: TrainConfig) -> None:
    """``tanh-continuation``: β = (1 + γ·step)^power at the epoch's first step; else nothing."""
    if config.hash_activation != "tanh-continuation":
        return
    p = ATTENTION_FUSION.params(config)
    step = info.epoch * info.steps_per_epoch
    set_hash_scale(model, hashnet_scale(step, p["scale_gamma"], p["scale_power"]))


ATTENTION_FUSION = register_method(
    Method(
        name="attention-fusion",
        build_model=build_model,
        loss=loss,
        description="spatial attention (3 descriptors) + global/local fusion; contrastive+reg+BCE",
        defaults=DEFAULTS,
        on_epoch=on_epoch,
        takes_context=True,
        rotates_codes=lambda config: bool(recipe(config)["itq"]),
    )
)
