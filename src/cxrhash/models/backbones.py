"""Convolutional backbones that turn grey radiographs into an intermediate feature map F.

Every backbone is registered in ``BACKBONES`` and built by ``create_backbone``,
which returns the truncated network (wrapped so that it takes B×1×H×W grey
images in [0, 1]) together with the channel count and stride of its output.

``feature_stage`` picks where the network is cut:

* 3 (default) → ResNet ``layer3`` (stride 16). SPEC §1 feeds the attention and
  refinement branches with an *intermediate* feature map F; stride 16 keeps a
  14×14 map at 224 px (8×8 at 128 px), enough positions for a spatial
  attention map to select a region, where ``layer4`` would leave 7×7 (4×4).
* 4 → ResNet ``layer4`` (stride 32), the last convolutional map.

DenseNet-121 is cut at the same strides: stage 3 = ``denseblock3`` followed by
the BatchNorm + ReLU of ``transition3`` (1024 channels, stride 16; the
transition's 1×1 conv and 2×2 pooling are dropped), stage 4 = all of
``features`` + ReLU (``norm5`` then ReLU, as torchvision's classifier does;
1024 channels, stride 32). Both stages thus end in a normalised activation.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
import torchvision
from torch import Tensor, nn

from cxrhash.registry import Registry

LOG = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_STAGES = (3, 4)
_STRIP_PREFIXES = ("module.", "backbone.", "encoder_q.", "encoder.", "model.")
_CHECKPOINT_KEYS = ("state_dict", "model", "backbone")
_MIN_MATCHED_FRACTION = 0.5
# Old torchvision DenseNet checkpoints name layers ``norm.1``; current ones ``norm1``.
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


class BackboneWeightsError(ValueError):
    """Backbone weights could not be obtained or do not fit the architecture."""


@dataclass
class BackboneSpec:
    """A ready-to-use backbone and the shape facts downstream layers need.

    Attributes:
        module: maps B×in_chans×H×W images in [0, 1] to B×out_channels×H/stride×W/stride.
        out_channels: channel count K of the feature map F.
        stride: total down-sampling factor of the feature map.
    """

    module: nn.Module
    out_channels: int
    stride: int


@dataclass(frozen=True)
class BackboneRecipe:
    """How to build, load and cut one architecture (the registry's entries).

    Attributes:
        build: returns the full network with random initialisation.
        cut: ``cut(full_model, feature_stage) -> (body, out_channels, stride)``.
        head_prefixes: state-dict prefixes of the classifier head, which is not
            part of the backbone (excluded when counting matched tensors).
        torchvision_name: name for ``torchvision.models.get_model_weights``, or
            ``None`` when there are no published weights.
    """

    build: Callable[[], nn.Module]
    cut: Callable[[nn.Module, int], tuple[nn.Module, int, int]]
    head_prefixes: tuple[str, ...] = ()
    torchvision_name: str | None = None


BACKBONES: Registry[BackboneRecipe] = Registry("backbone")


class GreyInputAdapter(nn.Module):
    """Normalises [0, 1] images with ImageNet mean/std and replicates grey to RGB.

    A grey image is replicated to 3 channels *before* the per-channel ImageNet
    normalisation, so ImageNet-pretrained first-layer weights see exactly the
    statistics they were trained on (a grey pixel = equal R, G, B).
    """

    mean: Tensor
    std: Tensor

    def __init__(self, body: nn.Module, in_chans: int = 1) -> None:
        super().__init__()
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 (grey) or 3 (RGB), got {in_chans}")
        self.in_chans = in_chans
        self.body = body
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Map B×in_chans×H×W images in [0, 1] to the backbone's feature map."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"backbone expects B×{self.in_chans}×H×W images, got shape {tuple(x.shape)}"
            )
        if self.in_chans == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.body((x - self.mean) / self.std)


def _check_stage(feature_stage: int) -> None:
    if feature_stage not in FEATURE_STAGES:
        raise ValueError(f"feature_stage must be one of {FEATURE_STAGES}, got {feature_stage}")


def _cut_resnet(model: nn.Module, feature_stage: int) -> tuple[nn.Module, int, int]:
    _check_stage(feature_stage)
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]
    if feature_stage == 4:
        names.append("layer4")
    body = nn.Sequential(*(getattr(model, n) for n in names))
    last_block = getattr(model, names[-1])[-1]
    # BasicBlock ends in bn2, Bottleneck in bn3: the last BN's width is the output width.
    out_channels = (last_block.bn3 if hasattr(last_block, "bn3") else last_block.bn2).num_features
    return body, out_channels, 16 if feature_stage == 3 else 32


def _cut_densenet(model: nn.Module, feature_stage: int) -> tuple[nn.Module, int, int]:
    _check_stage(feature_stage)
    features = cast(nn.Sequential, model.features)
    parts = dict(features.named_children())
    if feature_stage == 3:
        names = ["conv0", "norm0", "relu0", "pool0", "denseblock1", "transition1"]
        names += ["denseblock2", "transition2", "denseblock3"]
        norm = cast(nn.BatchNorm2d, parts["transition3"].get_submodule("norm"))
        layers = [parts[n] for n in names] + [norm, nn.ReLU(inplace=True)]
        return nn.Sequential(*layers), norm.num_features, 16
    norm5 = cast(nn.BatchNorm2d, parts["norm5"])
    return nn.Sequential(features, nn.ReLU(inplace=True)), norm5.num_features, 32


def _torchvision_recipe(name: str, cut: Callable, head: tuple[str, ...]) -> BackboneRecipe:
    def build() -> nn.Module:
        return torchvision.models.get_model(name, weights=None)

    return BackboneRecipe(build=build, cut=cut, head_prefixes=head, torchvision_name=name)


for _name in ("resnet18", "resnet34", "resnet50"):
    BACKBONES.register(_name)(_torchvision_recipe(_name, _cut_resnet, ("fc.",)))
BACKBONES.register("densenet121")(
    _torchvision_recipe("densenet121", _cut_densenet, ("classifier.",))
)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyCNN(nn.Module):
    """A ~20k-parameter CNN with ResNet-like strides (16 at stage 3, 32 at stage 4), for tests."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = _conv_bn_relu(3, 8)  # stride 2
        self.stage2 = _conv_bn_relu(8, 16)  # stride 4
        self.stage3 = nn.Sequential(_conv_bn_relu(16, 32), _conv_bn_relu(32, 32))  # stride 16
        self.stage4 = _conv_bn_relu(32, 32)  # stride 32

    def forward(self, x: Tensor) -> Tensor:
        """Full network: the stride-32 map."""
        return self.stage4(self.stage3(self.stage2(self.stage1(x))))


def _cut_tiny(model: nn.Module, feature_stage: int) -> tuple[nn.Module, int, int]:
    _check_stage(feature_stage)
    names = ["stage1", "stage2", "stage3"] + (["stage4"] if feature_stage == 4 else [])
    stages = [model.get_submodule(n) for n in names]
    return nn.Sequential(*stages), 32, 16 if feature_stage == 3 else 32


BACKBONES.register("test-cnn")(BackboneRecipe(build=TinyCNN, cut=_cut_tiny))


def _is_weights_enum_name(weights: str) -> bool:
    return re.fullmatch(r"([A-Za-z0-9]+_Weights\.)?[A-Z0-9_]+", weights) is not None


def _download_torchvision_weights(recipe: BackboneRecipe, name: str, weights: str) -> nn.Module:
    if recipe.torchvision_name is None:
        raise BackboneWeightsError(
            f"backbone {name!r} has no published weights {weights!r}; pass a local file"
        )
    try:
        if "." in weights:
            enum = torchvision.models.get_weight(weights)
        else:
            enum = torchvision.models.get_model_weights(recipe.torchvision_name)[weights]
    except (KeyError, ValueError) as err:
        raise BackboneWeightsError(
            f"unknown torchvision weights {weights!r} for backbone {name!r} "
            f"(expected e.g. 'IMAGENET1K_V1' or a path to an existing local file)"
        ) from err
    try:
        model = torchvision.models.get_model(recipe.torchvision_name, weights=enum)
    except Exception as err:  # download failures surface as URLError, OSError, RuntimeError...
        raise BackboneWeightsError(
            f"cannot download torchvision weights {enum} for backbone {name!r} ({err}); "
            "pass a local file with the state_dict instead"
        ) from err
    LOG.info("loaded torchvision weights %s into backbone %s", enum, name)
    return model


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read a state_dict (or a checkpoint dict holding one) and normalise its keys."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise BackboneWeightsError(
            f"cannot read backbone weights file {path}: {err}; expected a torch.save'd "
            f"state_dict or a checkpoint dict with one of the keys {_CHECKPOINT_KEYS}"
        ) from err
    if isinstance(obj, dict):
        for key in _CHECKPOINT_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise BackboneWeightsError(
            f"backbone weights file {path} holds a {type(obj).__name__}, expected a "
            f"state_dict (name → tensor) or a checkpoint dict with one of {_CHECKPOINT_KEYS}"
        )
    return {_normalised_key(key): value for key, value in obj.items()}


def _normalised_key(key: str) -> str:
    """A weight's key without wrapper prefixes (``module.``, …, repeatedly) and with
    torchvision's old DenseNet names (``norm.1``) in today's form (``norm1``)."""
    changed = True
    while changed:
        changed = False
        for prefix in _STRIP_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    match = _DENSENET_OLD_KEY.match(key)
    return match.group(1) + match.group(2) if match else key


def load_backbone_weights(model: nn.Module, path: Path, recipe: BackboneRecipe) -> int:
    """Load a local state_dict into the full (untruncated) network, tolerating extra keys.

    Tensors are matched by name (after stripping ``module.``/``backbone.``/
    ``encoder_q.``-style prefixes) and shape; the classifier head does not count.

    Returns:
        The number of backbone tensors loaded.

    Raises:
        BackboneWeightsError: the file is unreadable, or fewer than half of the
            backbone's tensors found a match.
    """
    source = _read_state_dict(path)
    target = {k: v for k, v in model.state_dict().items() if not k.startswith(recipe.head_prefixes)}
    matched = {
        k: source[k] for k, v in target.items() if k in source and source[k].shape == v.shape
    }
    if len(matched) < _MIN_MATCHED_FRACTION * len(target):
        missing = [k for k in target if k not in matched][:5]
        raise BackboneWeightsError(
            f"backbone weights file {path} matches only {len(matched)} of {len(target)} "
            f"backbone tensors (need ≥ {_MIN_MATCHED_FRACTION:.0%}); unmatched e.g. {missing}; "
            f"file keys e.g. {list(source)[:5]}"
        )
    model.load_state_dict(matched, strict=False)
    LOG.info("loaded %d/%d backbone tensors from %s", len(matched), len(target), path)
    return len(matched)


def create_backbone(
    name: str,
    *,
    feature_stage: int = 3,
    weights: str | Path | None = None,
    in_chans: int = 1,
) -> BackboneSpec:
    """Build a registered backbone, optionally load weights, and cut it at ``feature_stage``.

    Args:
        name: a name in ``BACKBONES`` (``resnet18``, ``resnet34``, ``resnet50``,
            ``densenet121``, ``test-cnn``).
        feature_stage: 3 (stride 16, default; SPEC's intermediate map) or 4 (stride 32).
        weights: ``None`` (random init); a torchvision weights name such as
            ``"IMAGENET1K_V1"`` (downloaded, so online only); or a local file
            holding a state_dict or a checkpoint dict with a ``state_dict`` /
            ``model`` / ``backbone`` entry. Weights load into the full network
            before it is cut.
        in_chans: 1 for grey input (replicated to RGB inside), 3 for RGB.

    Returns:
        The wrapped backbone with its output channels and stride.

    Raises:
        KeyError: unknown backbone name.
        ValueError: bad ``feature_stage`` or ``in_chans``.
        BackboneWeightsError: weights cannot be obtained or do not fit.
    """
    recipe = BACKBONES.get(name)
    _check_stage(feature_stage)
    if weights is None:
        model = recipe.build()
    elif Path(weights).is_file():
        model = recipe.build()
        load_backbone_weights(model, Path(weights), recipe)
    elif isinstance(weights, str) and _is_weights_enum_name(weights):
        model = _download_torchvision_weights(recipe, name, weights)
    else:
        raise BackboneWeightsError(
            f"backbone weights {str(weights)!r} is neither an existing file nor a torchvision "
            "weights name like 'IMAGENET1K_V1'"
        )
    body, out_channels, stride = recipe.cut(model, feature_stage)
    return BackboneSpec(GreyInputAdapter(body, in_chans), out_channels, stride)
