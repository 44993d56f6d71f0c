"""``cxrhash train`` and ``cxrhash pretrain``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cxrhash.cli.common import DATA_HELP, command, console, err, fail, launch, setup_logging
from cxrhash.cli.options import Setting, dataclass_settings, with_options
from cxrhash.config import (
    FIELD_HELP,
    PROFILES,
    TrainConfig,
    make_config,
    parse_fractions,
    parse_params,
)

#: Every scalar TrainConfig field becomes an option; these are given another way.
_TRAIN_SETTINGS = dataclass_settings(
    TrainConfig,
    FIELD_HELP,
    skip=("data", "profile"),
    flags={"num_workers": "workers"},
)
#: The settings `cxrhash pretrain` exposes (C2LConfig's fields; the config module pulls in
#: torch, so the types are stated here and checked against it when the command runs).
_PRETRAIN_SETTINGS = [
    Setting("backbone", str, "resnet18 (default)|resnet34|resnet50|densenet121"),
    Setting("image_size", int, "Square view size in pixels (default 64)."),
    Setting("epochs", int, "Default 20."),
    Setting("batch_size", int, "Default 64."),
    Setting("lr", float, "Initial SGD lr, cosine to 0 (0.03)."),
    Setting("queue", int, "Negative keys kept (default 4096)."),
    Setting(
        "momentum", float, "Key-encoder moving average m (default 0.999; 0.99 for short runs)."
    ),
    Setting("temperature", float, "Softmax temperature τ (default 0.2)."),
    Setting(
        "bn_groups",
        int,
        "Sub-batches batch norm sees; keys drawn from a shuffled batch (MoCo's shuffling BN; "
        "default 4, 1 = off).",
    ),
    Setting(
        "augment_strength",
        float,
        "Scales the views' crop, rotation and jitter: 1 = crop 50–100 %, ±10°, ±40 % "
        "(default); 0 = flips only.",
    ),
    Setting(
        "probe_images",
        int,
        "Images of the k-NN probe run after each epoch when manifest.csv has a 'label' column "
        "(default 600; 0 = off). Labels only watch, never train.",
    ),
    Setting("max_images", int, "Use a seeded random subset of this many images."),
    Setting("seed", int, "Seed for init, order, augmentation."),
    Setting("num_workers", int, "DataLoader worker processes.", flag="workers"),
]


def paper_backbone_of(method: str | None) -> str | None:
    """The backbone ``method``'s paper uses (``Method.paper_backbone``), for the paper profile;
    ``None`` for an unknown name (which fails with the list of methods when training starts)."""
    from cxrhash.methods import METHODS

    name = method or TrainConfig.method
    return METHODS.get(name).paper_backbone if name in METHODS else None


def train_config(
    out: Path, profile: str | None, resume: bool, given: dict[str, Any]
) -> TrainConfig:
    """The run's config: a profile plus the options given, or with ``resume`` the saved
    config plus the options given (the trainer refuses changes it cannot resume with)."""
    if resume and (out / "config.json").exists():
        saved = json.loads((out / "config.json").read_text())
        if profile is not None:
            given["profile"] = profile
        return TrainConfig.from_dict({**saved, **{k: v for k, v in given.items() if v is not None}})
    return make_config(
        profile or "paper", paper_backbone=paper_backbone_of(given["method"]), **given
    )


@command()
@with_options(_TRAIN_SETTINGS)
def train(
    data: Annotated[str, typer.Option(help=DATA_HELP)],
    out: Annotated[Path, typer.Option(help="Run directory (checkpoints, config, split).")],
    profile: Annotated[
        str | None, typer.Option(help=f"{FIELD_HELP['profile']} Profiles: {', '.join(PROFILES)}.")
    ] = None,
    param: Annotated[list[str] | None, typer.Option(help=FIELD_HELP["method_params"])] = None,
    split_fractions: Annotated[str | None, typer.Option(help=FIELD_HELP["split_fractions"])] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from last.pt.")] = False,
    nproc: Annotated[
        int,
        typer.Option(
            help="Train in N data-parallel processes on this machine (launches torchrun; "
            "--batch-size stays the global batch, docs/scale.md).",
            min=1,
        ),
    ] = 1,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    **settings: Any,
) -> None:
    """Train a hashing method; a checkpoint is written every epoch (resumable).

    Every training setting is an option (defaults: the --profile's, see `cxrhash methods`).
    With --resume, the run continues with its saved settings: --epochs, --workers and
    --device may change, any other option that differs from the saved run is refused.
    """
    setup_logging(verbose)
    from cxrhash.training import distributed

    if nproc > 1 and not distributed.requested():
        launch(nproc, ("--nproc",))
    from cxrhash.training.trainer import train as run_train

    given = {
        "data": data,
        **settings,
        "split_fractions": parse_fractions(split_fractions) if split_fractions else None,
        "method_params": parse_params(param or []) or None,
    }
    config = train_config(out, profile, resume, given)
    result = run_train(config, out, resume=resume)
    main = distributed.is_main()
    distributed.shutdown()
    if main:
        _print_train_summary(config, out, result)


def _print_train_summary(config: Any, out: Path, result: Any) -> None:
    if result.rollbacks:
        err.print(
            f"[yellow]warning:[/] the loss diverged {len(result.rollbacks)} time(s); each was "
            f"rolled back with a lower learning rate (see {out / 'rollbacks.json'})"
        )
    console.print(
        f"trained {result.epochs_run} epochs in {result.train_seconds:.0f} s "
        f"({result.images_per_second:.1f} img/s); best val {config.val_metric} "
        f"{result.best_score:.4f} at epoch {result.best_epoch}; peak memory "
        f"{result.peak_memory_mb:.0f} MiB; skipped {len(result.skipped)} unreadable images"
    )
    rotation = out / "code_rotation.json"
    if rotation.exists():
        r = json.loads(rotation.read_text())
        console.print(
            f"codes rotated by ITQ on {r['films']} training films: one-signed bits "
            f"{r['one_signed_bits_before']} → {r['one_signed_bits_after']}, distinct codes "
            f"{r['distinct_share_before']:.1%} → {r['distinct_share_after']:.1%} of the films"
        )
    console.print(f"checkpoints: {out / 'best.pt'}, {out / 'last.pt'}")


@command(
    help="Self-supervised pretraining of a backbone on unlabelled radiographs (no labels used)."
    "\n\nWrites OUT/backbone.pt, the backbone's weights in torchvision key names: pass "
    "OUT/backbone.pt as --backbone-weights to `cxrhash train` (with the same --backbone) to "
    "start from it instead of random or ImageNet weights. OUT/last.pt is written every epoch; "
    "--resume continues it."
)
@with_options(_PRETRAIN_SETTINGS)
def pretrain(
    data: Annotated[
        Path,
        typer.Option(
            help="Folder of unlabelled radiographs: manifest.csv with a 'file' column "
            "(paths relative to the folder), or PNG/JPEG/TIFF/DICOM files found recursively."
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Output folder: backbone.pt, last.pt, history.json, curves PNG.")
    ],
    method: Annotated[
        str, typer.Option(help="Pretraining method: c2l (MoCo + image/feature mixup).")
    ] = "c2l",
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out from last.pt (may raise --epochs).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    **settings: Any,
) -> None:
    """Pretrain a backbone without labels; OUT/backbone.pt feeds `train --backbone-weights`."""
    setup_logging(verbose)
    from dataclasses import fields

    from cxrhash.pretrain import PRETRAIN_METHODS

    if method not in PRETRAIN_METHODS:
        fail(f"unknown pretraining method {method!r}; known: {PRETRAIN_METHODS.names()}")
    entry = PRETRAIN_METHODS.get(method)
    given = {k: v for k, v in settings.items() if v is not None}
    names = {f.name for f in fields(entry.config_type)}
    foreign = sorted(set(given) - names)
    if foreign:
        fail(f"method {method!r} has no setting(s) {foreign}")
    saved: dict[str, Any] = {}
    if resume and (out / "config.json").exists():
        saved = json.loads((out / "config.json").read_text())
    config = entry.config_type(**{k: v for k, v in {**saved, **given}.items() if k in names})
    summary = entry.run(config, data, out, resume=resume, progress=not quiet)
    _print_pretrain_summary(method, config.backbone, summary)


def _print_pretrain_summary(method: str, backbone: str, summary: dict[str, Any]) -> None:
    console.print(
        f"pretrained {backbone} with {method} for {summary['epochs_run']} epochs on "
        f"{summary['images']} images in {summary['seconds']:.0f} s "
        f"({summary['images_per_second']:.1f} img/s); final loss {summary['final_loss']:.4f}; "
        f"skipped {summary['skipped_files']} unreadable images"
    )
    if summary.get("pretext_top1") is not None:
        console.print(
            f"pretext check: {summary['pretext_top1']:.3f} of 256 fixed view pairs find "
            f"their own image's key first (chance {summary['pretext_top1_chance']:.3f})"
        )
    if summary.get("knn_probe") is not None:
        console.print(
            f"k-NN probe (balanced accuracy on labelled films): {summary['knn_probe']:.3f} "
            f"after training, {summary['knn_probe_init']:.3f} at initialisation, "
            f"{summary['knn_probe_pixels']:.3f} on 16×16 thumbnails (no network), "
            f"chance {summary['knn_probe_chance']:.3f}"
        )
    console.print(
        f"backbone weights: {summary['backbone_weights']} → use with "
        f"`cxrhash train --backbone {backbone} --backbone-weights "
        f"{summary['backbone_weights']} ...`"
    )
