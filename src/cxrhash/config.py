"""Training configuration: one dataclass, named profiles, JSON round-trip.

The ``paper`` profile is the setting of Guan et al. 2023 (ResNet-50, 224 px,
SGD 0.01 → 0.001 after epoch 20, 50 epochs, batch 64) and is meant for GPUs.
The ``cpu`` profile (ResNet-18, 128 px, Adam at 10⁻³: SGD at the paper's 0.01 does not
leave the label prior in its 12 epochs) and the ``cpu-fast`` profile (ResNet-18, 64 px,
the paper's SGD) finish a real benchmark on a 2-core machine in minutes;
``bench`` (ResNet-18, 64 px, 4 epochs, validation against 300 training films)
is what ``cxrhash bench`` trains for every cell so a 3-seed grid of all methods
fits in 2 hours on 2 cores;
``demo`` is what ``cxrhash demo`` trains on phantom data.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.6, "val": 0.1, "query": 0.1, "database": 0.2}


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``config.json`` beside it."""

    data: str = ""
    method: str = "attention-fusion"
    backbone: str = "resnet50"
    backbone_weights: str | None = None
    feature_stage: int = 3
    variant: str = "full"
    bits: int = 64
    hash_activation: str = "identity"  # paper; "normalize" never diverges (docs/hash_layer.md)
    image_size: int = 224
    epochs: int = 50
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.01
    lr_step_epoch: int = 20  # one drop: lr × lr_gamma from this epoch on (the paper: 20)
    lr_gamma: float = 0.1
    warmup_epochs: float = 0.0  # linear learning-rate warm-up (the paper has none)
    grad_clip: float | None = None  # max global gradient norm (the paper has none)
    amp: str = "auto"  # mixed precision: auto (CUDA only) | on | off
    channels_last: str = "auto"  # auto (CUDA only) | on | off
    max_rollbacks: int = 3  # divergence guard: rollbacks before giving up
    rollback_lr_factor: float = 0.5  # learning-rate multiplier at each rollback
    momentum: float = 0.9
    weight_decay: float = 1e-4
    alpha: float = 0.5
    beta: float = 0.5
    margin: float | None = None
    method_params: dict[str, float] = field(default_factory=dict)  # see Method.defaults
    no_finding_class: bool = True
    augment: bool = True
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"  # auto (CUDA, else MPS, else CPU) | cpu | cuda | mps
    val_metric: str = "mAP@100"
    val_database_max: int = 2000  # training images the validation queries search
    split_fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    official_split: str | None = None  # folder with NIH's train_val_list/test_list
    profile: str = "paper"

    def to_json(self) -> str:
        """Serialise to JSON (stable key order)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict, rejecting unknown keys with a clear message."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """Read a ``config.json`` written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save(self, path: Path) -> None:
        """Write ``config.json`` atomically."""
        tmp = Path(path).with_suffix(".json.tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)


#: What each field means, for ``cxrhash train --help`` (every field has an entry: tested).
FIELD_HELP: dict[str, str] = {
    "data": "Dataset spec (see `cxrhash train --help`).",
    "method": "Registered method name (`cxrhash methods` lists them).",
    "backbone": "resnet18|resnet34|resnet50|densenet121",
    "backbone_weights": "Local weights file, or a torchvision enum name (needs internet).",
    "feature_stage": "Backbone stage whose map F feeds the branches (3 or 4).",
    "variant": "Ablation: full|no-maxp-avgp|no-fmax|global-only|local-only.",
    "bits": "Code length k.",
    "hash_activation": "Activation of the hash layer: identity|tanh|tanh-continuation|"
    "normalize|ball|ball2|batchnorm (docs/design.md, docs/hash_layer.md).",
    "image_size": "Square input size in pixels.",
    "epochs": "Passes over the training images.",
    "batch_size": "Images per step.",
    "optimizer": "sgd (paper) or adam.",
    "lr": "Initial learning rate.",
    "lr_step_epoch": "Epochs at the base lr before its one drop (× --lr-gamma).",
    "lr_gamma": "Factor of the learning-rate drop (default 0.1).",
    "warmup_epochs": "Linear lr warm-up over this many epochs (default 0).",
    "grad_clip": "Clip the global gradient norm to this value (default: no clipping).",
    "amp": "Mixed precision: auto (float16 on CUDA only, the default), on (= fp16), off, "
    "fp16 (float16 with loss scaling) or bf16 (bfloat16, no scaling), on any device.",
    "channels_last": "Channels-last memory format: auto (CUDA only), on or off.",
    "max_rollbacks": "Divergence guard: rollbacks to the last good epoch before giving up.",
    "rollback_lr_factor": "Learning-rate factor applied at each rollback.",
    "momentum": "SGD momentum.",
    "weight_decay": "L2 weight decay.",
    "alpha": "Weight of the quantisation term.",
    "beta": "Weight of the BCE term.",
    "margin": "Contrastive margin m (default for attention-fusion: √(margin_scale·bits)).",
    "method_params": "Method hyper-parameter NAME=VALUE (repeatable), e.g. --param rho=3 "
    "for osdh; `cxrhash methods` lists each method's parameters and defaults.",
    "no_finding_class": "Add the `No Finding` class to the classifier's targets.",
    "augment": "Light radiograph-safe augmentation of training images (default on).",
    "seed": "Seed for split, init and order.",
    "num_workers": "DataLoader worker processes.",
    "device": "Where to train: auto (CUDA, else Apple MPS, else the CPU; the default), cpu, "
    "cuda or mps. May change on --resume.",
    "val_metric": "Validation metric that picks best.pt (default mAP@100).",
    "val_database_max": "Training images the validation queries search (default 2000).",
    "split_fractions": "Patient-disjoint split as PART=SHARE,… over train, val, query, "
    "database (default train=0.6,val=0.1,query=0.1,database=0.2).",
    "official_split": "Folder holding NIH's train_val_list.txt and test_list.txt: train/val "
    "come from the first, query/database from the second.",
    "profile": "Settings profile, a name of PROFILES (default paper). 'paper' = ResNet-50 at "
    "224 px, 50 epochs (GPU); 'cpu' = ResNet-18 at 128 px; 'cpu-fast' = ResNet-18 at 64 px.",
}

SPLIT_PARTS = ("train", "val", "query", "database")


def parse_fractions(text: str) -> dict[str, float]:
    """``"train=0.7,val=0.1,query=0.1,database=0.1"`` → a dict; a clear error otherwise."""
    out: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if not sep or name.strip() not in SPLIT_PARTS or not 0 <= share <= 1:
            raise ValueError(
                f"--split-fractions expects PART=SHARE,… with parts {', '.join(SPLIT_PARTS)} "
                f"and shares in [0, 1]; got {item!r}"
            )
        out[name.strip()] = share
    missing = [p for p in SPLIT_PARTS if p not in out]
    if missing or not 0.99 <= sum(out.values()) <= 1.01:
        raise ValueError(
            f"--split-fractions must give all of {', '.join(SPLIT_PARTS)} summing to 1; "
            f"got {text!r}"
        )
    return out


def parse_params(items: list[str]) -> dict[str, float]:
    """``["rho=3", "lambda_c=0"]`` → ``{"rho": 3.0, "lambda_c": 0.0}``; a clear error otherwise."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--param expects NAME=NUMBER, got {item!r}") from None
    return out


PROFILES: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {
        "backbone": "resnet18",
        "image_size": 128,
        "epochs": 12,
        "batch_size": 32,
        # SGD at 0.01 leaves 900 films at 128 px untrained in 12 epochs (docs/design.md)
        "optimizer": "adam",
        "lr": 0.001,
        "lr_step_epoch": 8,
    },
    "cpu-fast": {
        "backbone": "resnet18",
        "image_size": 64,
        "epochs": 12,
        "batch_size": 32,
        "lr_step_epoch": 8,
    },
    "bench": {
        "backbone": "resnet18",
        "image_size": 64,
        "epochs": 4,
        "batch_size": 32,
        "lr_step_epoch": 3,
        "val_database_max": 300,
    },
    "demo": {
        "backbone": "resnet18",
        "image_size": 64,
        "epochs": 8,
        "batch_size": 32,
        "lr_step_epoch": 6,
        "bits": 32,
    },
    "test": {
        "backbone": "test-cnn",
        "image_size": 32,
        "epochs": 2,
        "batch_size": 8,
        "lr_step_epoch": 1,
        "bits": 16,
    },
}


def make_config(
    profile: str = "paper", *, paper_backbone: str | None = None, **overrides: Any
) -> TrainConfig:
    """A config from a named profile plus explicit overrides (``None`` means 'keep').

    Args:
        profile: a name of :data:`PROFILES`.
        paper_backbone: the backbone the method's paper uses
            (``Method.paper_backbone``, passed in so this module needs no
            method registry); the ``paper`` profile takes it unless
            ``backbone`` is overridden explicitly. Other profiles ignore it.
        overrides: config fields; ``None`` values keep the profile's.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    values: dict[str, Any] = {"profile": profile, **PROFILES[profile]}
    if profile == "paper" and paper_backbone is not None:
        values["backbone"] = paper_backbone
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values)
