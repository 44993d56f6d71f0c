"""``cxrhash demo``, ``phantom`` and ``methods``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxrhash.cli.common import command, console, setup_logging
from cxrhash.config import PROFILES


@command()
def demo(
    out: Annotated[Path, typer.Option(help="Working folder for data, run and figures.")] = Path(
        "cxrhash-demo"
    ),
    n_images: Annotated[int, typer.Option(help="Phantom images to generate.")] = 1000,
    epochs: Annotated[int | None, typer.Option(help="Override the demo profile's epochs.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Phantom data → train on CPU → index → search → retrieval table and PNG (a few minutes)."""
    setup_logging(False)
    from cxrhash.demo import run_demo

    run_demo(out, n_images=n_images, epochs=epochs, seed=seed, console=console)


@command()
def phantom(
    out: Annotated[Path, typer.Option(help="Output folder (NIH-format labels.csv + images/).")],
    n: Annotated[int, typer.Option(help="Number of images.")] = 1000,
    size: Annotated[int, typer.Option(help="Image size in pixels.")] = 128,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write a synthetic chest-radiograph dataset with known findings and lesion masks."""
    from cxrhash.data.phantom import write_phantom_dataset

    path = write_phantom_dataset(out, n, size, seed=seed)
    console.print(f"wrote {n} phantom radiographs to {path} (read it with --data phantom:{path})")


@command()
def methods() -> None:
    """List registered methods, backbones and profiles."""
    from cxrhash.methods import METHODS
    from cxrhash.models.backbones import BACKBONES

    for name in METHODS.names():
        m = METHODS.get(name)
        console.print(f"method    {name}: {m.description}")
        if m.defaults:
            console.print(
                "          --param " + ", ".join(f"{k}={v:g}" for k, v in m.defaults.items())
            )
        if m.paper:
            console.print(f"          paper: {m.paper}")
        if m.paper_backbone:
            console.print(
                f"          backbone in --profile paper: {m.paper_backbone} (unless --backbone)"
            )
    console.print("backbones " + ", ".join(BACKBONES.names()))
    for name, values in PROFILES.items():
        console.print(f"profile   {name}: {values or '(paper defaults)'}")
