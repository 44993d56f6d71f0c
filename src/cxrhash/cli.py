"""The ``cxrhash`` command line: train, eval, index, search, demo, phantom, methods."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cxrhash.bench.grid import DEEP_BASELINES, PAPER_METHODS, SHALLOW
from cxrhash.config import PROFILES, TrainConfig, make_config

if TYPE_CHECKING:
    from cxrhash.bench.runner import BenchSpec
    from cxrhash.retrieve import QueryResult

app = typer.Typer(
    help="Content-based retrieval of chest radiographs by deep hashing.\n\n"
    "Typical flow: `cxrhash train --data nih:DIR --out runs/a` → `cxrhash eval runs/a` → "
    "`cxrhash index --checkpoint runs/a --data nih:DIR --out idx` → "
    "`cxrhash search x.png --index idx`. `cxrhash demo` does all of it on phantom data.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()
err = Console(stderr=True, soft_wrap=True)  # messages stay whole lines, for grep and logs

DATA_HELP = (
    "Dataset spec: nih:PATH (Data_Entry_2017.csv / labels.csv, or a folder holding them), "
    "chexpert:CSV[?uncertain=ones|zeros|ignore], chestmnist:NPZ[?split=train|val|test] "
    "(all three official parts, kept apart by the split, when omitted), "
    "folder:DIR?csv=FILE, phantom:DIR."
)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code=2)


def parse_fractions(text: str) -> dict[str, float]:
    """``"train=0.7,val=0.1,query=0.1,database=0.1"`` → a dict; a clear error otherwise."""
    parts = ("train", "val", "query", "database")
    out: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if not sep or name.strip() not in parts or not 0 <= share <= 1:
            raise ValueError(
                f"--split-fractions expects PART=SHARE,… with parts {', '.join(parts)} and "
                f"shares in [0, 1]; got {item!r}"
            )
        out[name.strip()] = share
    missing = [p for p in parts if p not in out]
    if missing or not 0.99 <= sum(out.values()) <= 1.01:
        raise ValueError(
            f"--split-fractions must give all of {', '.join(parts)} summing to 1; got {text!r}"
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


def paper_backbone_of(method: str | None) -> str | None:
    """The backbone ``method``'s paper uses (``Method.paper_backbone``), for the paper profile.

    ``None`` means the training default method; an unknown name gives ``None``
    here and fails with the list of methods when training starts.
    """
    from cxrhash.methods import METHODS

    name = method or TrainConfig.method
    return METHODS.get(name).paper_backbone if name in METHODS else None


@app.command()
def train(
    data: Annotated[str, typer.Option(help=DATA_HELP)],
    out: Annotated[Path, typer.Option(help="Run directory (checkpoints, config, split).")],
    profile: Annotated[
        str | None,
        typer.Option(
            help=f"Settings profile: {', '.join(PROFILES)} (default paper). 'paper' = ResNet-50 "
            "at 224 px, 50 epochs (GPU); 'cpu' = ResNet-18 at 128 px; 'cpu-fast' = ResNet-18 "
            "at 64 px."
        ),
    ] = None,
    method: Annotated[str | None, typer.Option(help="Registered method name.")] = None,
    backbone: Annotated[
        str | None, typer.Option(help="resnet18|resnet34|resnet50|densenet121")
    ] = None,
    backbone_weights: Annotated[
        str | None,
        typer.Option(help="Local weights file, or a torchvision enum name (needs internet)."),
    ] = None,
    variant: Annotated[
        str | None,
        typer.Option(help="Ablation: full|no-maxp-avgp|no-fmax|global-only|local-only."),
    ] = None,
    feature_stage: Annotated[
        int | None, typer.Option(help="Backbone stage whose map F feeds the branches (3 or 4).")
    ] = None,
    hash_activation: Annotated[
        str | None,
        typer.Option(
            help="Activation of the hash layer: identity|tanh|tanh-continuation|normalize|"
            "ball|ball2|batchnorm (docs/design.md, docs/hash_layer.md)."
        ),
    ] = None,
    bits: Annotated[int | None, typer.Option(help="Code length k.")] = None,
    image_size: Annotated[int | None, typer.Option(help="Square input size in pixels.")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option(help="Initial learning rate.")] = None,
    lr_step_epoch: Annotated[
        int | None, typer.Option(help="Epochs at the base lr before its one drop (× 0.1).")
    ] = None,
    warmup_epochs: Annotated[
        float | None, typer.Option(help="Linear lr warm-up over this many epochs (default 0).")
    ] = None,
    grad_clip: Annotated[
        float | None,
        typer.Option(help="Clip the global gradient norm to this value (default: no clipping)."),
    ] = None,
    amp: Annotated[
        str | None,
        typer.Option(help="Mixed precision: auto (on for CUDA only, the default), on or off."),
    ] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd (paper) or adam.")] = None,
    alpha: Annotated[float | None, typer.Option(help="Weight of the quantisation term.")] = None,
    beta: Annotated[float | None, typer.Option(help="Weight of the BCE term.")] = None,
    margin: Annotated[
        float | None,
        typer.Option(
            help="Contrastive margin m (default for attention-fusion: √(margin_scale·bits))."
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            help="Method hyper-parameter NAME=VALUE (repeatable), e.g. --param rho=3 for osdh; "
            "`cxrhash methods` lists each method's parameters and defaults."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for split, init and order.")] = None,
    workers: Annotated[int | None, typer.Option(help="DataLoader worker processes.")] = None,
    augment: Annotated[
        bool | None,
        typer.Option(
            "--augment/--no-augment",
            help="Light radiograph-safe augmentation of training images (default on).",
        ),
    ] = None,
    split_fractions: Annotated[
        str | None,
        typer.Option(
            help="Patient-disjoint split as PART=SHARE,… over train, val, query, database "
            "(default train=0.6,val=0.1,query=0.1,database=0.2)."
        ),
    ] = None,
    official_split: Annotated[
        Path | None,
        typer.Option(
            help="Folder holding NIH's train_val_list.txt and test_list.txt: train/val come "
            "from the first, query/database from the second."
        ),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from last.pt.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train a hashing method; a checkpoint is written every epoch (resumable).

    With --resume, the run continues with its saved settings: --epochs and --workers
    may change, any other option that differs from the saved run is refused.
    """
    _setup_logging(verbose)
    from cxrhash.training.trainer import train as run_train

    try:
        given: dict[str, Any] = {
            "data": data,
            "method": method,
            "backbone": backbone,
            "backbone_weights": backbone_weights,
            "variant": variant,
            "feature_stage": feature_stage,
            "hash_activation": hash_activation,
            "bits": bits,
            "image_size": image_size,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "lr_step_epoch": lr_step_epoch,
            "warmup_epochs": warmup_epochs,
            "grad_clip": grad_clip,
            "amp": amp,
            "optimizer": optimizer,
            "alpha": alpha,
            "beta": beta,
            "margin": margin,
            "seed": seed,
            "num_workers": workers,
            "augment": augment,
            "split_fractions": parse_fractions(split_fractions) if split_fractions else None,
            "official_split": str(official_split) if official_split else None,
            "method_params": parse_params(param or []) or None,
        }
        if resume and (out / "config.json").exists():
            saved = json.loads((out / "config.json").read_text())
            if profile is not None:
                given["profile"] = profile
            config = TrainConfig.from_dict(
                {**saved, **{k: v for k, v in given.items() if v is not None}}
            )
        else:
            config = make_config(
                profile or "paper", paper_backbone=paper_backbone_of(method), **given
            )
    except ValueError as exc:
        _fail(str(exc))
    try:
        result = run_train(config, out, resume=resume)
    except ValueError as exc:
        _fail(str(exc))
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


@app.command(
    help="Self-supervised pretraining of a backbone on unlabelled radiographs (no labels used)."
    "\n\nWrites OUT/backbone.pt, the backbone's weights in torchvision key names: pass "
    "OUT/backbone.pt as --backbone-weights to `cxrhash train` (with the same --backbone) to "
    "start from it instead of random or ImageNet weights. OUT/last.pt is written every epoch; "
    "--resume continues it."
)
def pretrain(
    data: Annotated[
        Path,
        typer.Option(
            help="Folder of unlabelled radiographs: manifest.csv with a 'file' column "
            "(paths relative to the folder), or PNG/JPEG/TIFF/DICOM files found recursively."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(help="Output folder: backbone.pt, last.pt, history.json, curves PNG."),
    ],
    method: Annotated[
        str, typer.Option(help="Pretraining method: c2l (MoCo + image/feature mixup).")
    ] = "c2l",
    backbone: Annotated[
        str | None, typer.Option(help="resnet18 (default)|resnet34|resnet50|densenet121")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Square view size in pixels (default 64).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Default 20.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Default 64.")] = None,
    lr: Annotated[float | None, typer.Option(help="Initial SGD lr, cosine to 0 (0.03).")] = None,
    queue: Annotated[int | None, typer.Option(help="Negative keys kept (default 4096).")] = None,
    momentum: Annotated[
        float | None,
        typer.Option(help="Key-encoder moving average m (default 0.999; 0.99 for short runs)."),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Softmax temperature τ (default 0.2).")
    ] = None,
    bn_groups: Annotated[
        int | None,
        typer.Option(
            help="Sub-batches batch norm sees; keys drawn from a shuffled batch (MoCo's "
            "shuffling BN; default 4, 1 = off)."
        ),
    ] = None,
    augment_strength: Annotated[
        float | None,
        typer.Option(
            help="Scales the views' crop, rotation and jitter: 1 = crop 50–100 %, ±10°, "
            "±40 % (default); 0 = flips only."
        ),
    ] = None,
    probe_images: Annotated[
        int | None,
        typer.Option(
            help="Images of the k-NN probe run after each epoch when manifest.csv has a "
            "'label' column (default 600; 0 = off). Labels only watch, never train."
        ),
    ] = None,
    max_images: Annotated[
        int | None, typer.Option(help="Use a seeded random subset of this many images.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for init, order, augmentation.")] = None,
    workers: Annotated[int | None, typer.Option(help="DataLoader worker processes.")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out from last.pt (may raise --epochs).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Pretrain a backbone without labels; OUT/backbone.pt feeds `train --backbone-weights`."""
    _setup_logging(verbose)
    from dataclasses import fields

    from cxrhash.data.dataset import DataFormatError
    from cxrhash.pretrain import PRETRAIN_METHODS, PretrainError

    if method not in PRETRAIN_METHODS:
        _fail(f"unknown pretraining method {method!r}; known: {PRETRAIN_METHODS.names()}")
    entry = PRETRAIN_METHODS.get(method)
    given = {
        "backbone": backbone,
        "image_size": image_size,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "queue": queue,
        "momentum": momentum,
        "temperature": temperature,
        "bn_groups": bn_groups,
        "augment_strength": augment_strength,
        "probe_images": probe_images,
        "max_images": max_images,
        "seed": seed,
        "num_workers": workers,
    }
    given = {k: v for k, v in given.items() if v is not None}
    names = {f.name for f in fields(entry.config_type)}
    foreign = sorted(set(given) - names)
    if foreign:
        _fail(f"method {method!r} has no setting(s) {foreign}")
    saved: dict = {}
    if resume and (out / "config.json").exists():
        saved = json.loads((out / "config.json").read_text())
    try:
        config = entry.config_type(**{k: v for k, v in {**saved, **given}.items() if k in names})
        summary = entry.run(config, data, out, resume=resume, progress=not quiet)
    except (PretrainError, DataFormatError) as exc:
        _fail(str(exc))
    console.print(
        f"pretrained {config.backbone} with {method} for {summary['epochs_run']} epochs on "
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
        f"`cxrhash train --backbone {config.backbone} --backbone-weights "
        f"{summary['backbone_weights']} ...`"
    )


@app.command("eval")
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="Run directory or checkpoint file.")],
    protocol: Annotated[
        str, typer.Option(help="literature (db = training images), strict, or both.")
    ] = "both",
    data: Annotated[str | None, typer.Option(help="Override the run's dataset spec.")] = None,
    random_seeds: Annotated[int, typer.Option(help="Seeds of the random-code reference.")] = 5,
    shortlist: Annotated[
        int | None,
        typer.Option(
            help="Hamming shortlist L of the two-stage rows (re-ranked by the query's float "
            "outputs, the rest of the database after it in Hamming order); default 1000 "
            "= max(10·100, 100)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    out: Annotated[Path | None, typer.Option(help="Where to write eval.json/eval.md.")] = None,
    batch_size: Annotated[int, typer.Option()] = 64,
    workers: Annotated[int, typer.Option()] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Every SPEC §6 metric of the codes, alone and re-ranked in two stages, beside the float
    upper bound, LSH and random codes; code rows give the share of distinct database codes."""
    _setup_logging(verbose)
    from cxrhash.evaluation.evaluate import (
        COLUMN_TITLES,
        HEADLINE,
        format_value,
        results_to_json,
        with_distinct_share,
    )
    from cxrhash.evaluation.run import evaluate_run

    protocols = ("literature", "strict") if protocol == "both" else (protocol,)
    results, facts = evaluate_run(
        checkpoint,
        protocols=protocols,
        data=data,
        batch_size=batch_size,
        num_workers=workers,
        random_seeds=random_seeds,
        shortlist=shortlist,
        out_dir=out,
        progress=not as_json,
    )
    if as_json:
        print(results_to_json(results, facts))
        return
    for res in results:
        table = Table(
            title=f"{res.protocol}: {res.n_query} queries × {res.n_database} database "
            f"(two-stage shortlist L = {res.shortlist})"
        )
        table.add_column("codes")
        cols = [*with_distinct_share(HEADLINE), "mAP@100_minkR", "P@H<=2"]
        for c in cols:
            table.add_column(COLUMN_TITLES.get(c, c), justify="right")
        for name, row in res.rows.items():
            table.add_row(name, *[format_value(row, c, sep="±") for c in cols])
        console.print(table)
    console.print(
        f"encode {facts['encode_ms_per_image']:.1f} ms/image; peak memory "
        f"{facts['peak_memory_mb']:.0f} MiB; written to {(out or Path(facts['checkpoint']).parent)}"
    )


@app.command()
def index(
    checkpoint: Annotated[
        Path | None, typer.Option(help="Run directory or checkpoint file (not with --verify).")
    ] = None,
    data: Annotated[str | None, typer.Option(help=DATA_HELP + " Not with --verify.")] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "--index", help="Index directory (created, or appended to)."),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Check the index at --out instead of adding to it: every shard's codes "
            "against their CRC-32s, every block of metadata rows (case ids, findings, "
            "patient pseudonyms, paths) against its SHA-256, and the removal record. Prints "
            "one OK line (saying which rows an older cxrhash left unverified), or CORRUPT "
            "and the damaged files and rows, and exits 1.",
        ),
    ] = False,
    part: Annotated[
        str | None,
        typer.Option(help="Only this part of the run's split (train|val|query|database)."),
    ] = None,
    batch_size: Annotated[int, typer.Option()] = 64,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    commit_every: Annotated[
        int, typer.Option(help="Images per atomic commit (an interrupted run resumes after it).")
    ] = 8192,
    backend: Annotated[
        str | None,
        typer.Option(
            help="Search backend of a new index: flat (default, exact), distinct (exact, for "
            "many repeated codes), hnsw, ivf, multihash (approximate)."
        ),
    ] = None,
    backend_param: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE parameter of the backend of a new index (repeatable; JSON values), "
            "e.g. distinct: probe_radius=2, probe_share=0.02; ivf: nlist=1024, nprobe=16; "
            "hnsw: m=32, ef_search=64; multihash: nhash=8, nflip=2."
        ),
    ] = None,
    shard_size: Annotated[
        int | None, typer.Option(help="Most codes per shard file of a new index (default 2^22).")
    ] = None,
    store_floats: Annotated[
        bool,
        typer.Option(
            "--store-floats",
            help="Create the index with a float store: each film's float outputs (float16, "
            "2·bits bytes per film beside its bits/8 bytes of code) for `search --rerank "
            "floats`. Chosen at creation only; an existing index keeps what it has.",
        ),
    ] = False,
    keep_source_names: Annotated[
        bool,
        typer.Option(
            "--keep-source-names",
            help="Create the index keeping each film's case id (file name) and source path, "
            "shown by `search`. Without it (the default) case ids are stored and shown as "
            "keyed pseudonyms (c-…) and no paths are kept, because names and paths often "
            "identify the patient (docs/security.md). Chosen at creation only.",
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Encode a dataset into a persistent Hamming index (appends; skips what is indexed).

    Patient ids, and case ids unless --keep-source-names, are stored as HMAC pseudonyms
    under a key kept outside the index (CXRHASH_PSEUDONYM_KEY, else the file
    CXRHASH_PSEUDONYM_KEY_FILE, else ~/.config/cxrhash/pseudonym.key, created on first
    use): the index folder alone identifies no one.

    Every image that cannot be read or decoded is skipped and listed with its reason.
    With --verify, check an existing index instead (exit 0: OK, 1: corrupt, 2: no index).
    """
    _setup_logging(verbose)
    if verify:
        if out is None or checkpoint is not None or data is not None:
            _fail("--verify takes the index folder (--index/--out) and no --checkpoint or --data")
        _verify_index(out)
        return
    if checkpoint is None or data is None or out is None:
        _fail("cxrhash index needs --checkpoint, --data and --out (or --verify --index DIR)")
    from cxrhash.data.readers import open_dataset
    from cxrhash.data.splits import load_split
    from cxrhash.retrieve import build_index
    from cxrhash.training.checkpoint import load_checkpoint

    params = _key_values(backend_param or [], "--backend-param")
    payload = load_checkpoint(checkpoint)
    dataset = open_dataset(data, payload["config"]["image_size"])
    if part is not None:
        split = load_split(Path(payload["path"]).parent / "split.json", dataset.case_ids)
        if part not in split:
            _fail(f"no split part {part!r}; parts: {sorted(split)}")
        dataset = dataset.subset(split[part])
    report = build_index(
        Path(payload["path"]),
        dataset,
        out,
        batch_size=batch_size,
        num_workers=workers,
        commit_every=commit_every,
        backend=backend,
        backend_params=params or None,
        shard_size=shard_size,
        store_floats=True if store_floats else None,
        keep_source_names=True if keep_source_names else None,
    )
    console.print(
        f"added {report.added} images ({report.images_per_second:.1f} img/s), "
        f"{report.already_indexed} already indexed, {report.unreadable} unreadable skipped; "
        f"index {out} holds {report.total}"
    )
    for s in report.skipped[:20]:
        err.print(f"  unreadable: {escape(str(s.path or s.case_id))}: {escape(s.reason)}")
    if report.unreadable > 20:
        err.print(f"  … and {report.unreadable - 20} more unreadable (see the log)")


def _verify_index(path: Path) -> None:
    """``cxrhash index --verify``: one OK line, or CORRUPT and its problems then exit 1."""
    from cxrhash.index.store import HashIndex, IndexCorruptError

    try:
        with HashIndex.open(path, verify=False) as ix:
            report = ix.verify()
    except FileNotFoundError as exc:
        _fail(str(exc))
    except IndexCorruptError as exc:
        err.print(f"CORRUPT {path}: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    for line in report.lines():
        (console if report.ok else err).print(line, markup=False, highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(code=1)


def _key_values(items: list[str], option: str) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` options; a value is JSON where it parses (``8``, ``true``), else text."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"{option} expects KEY=VALUE, got {item!r}")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


@app.command()
def search(
    images: Annotated[list[Path], typer.Argument(help="Query images (PNG, JPEG or DICOM).")],
    index_dir: Annotated[Path, typer.Option("--index", help="Index directory.")],
    k: Annotated[int, typer.Option("-k", help="Number of results per query.")] = 10,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Model (default: the one that built the index).")
    ] = None,
    rerank: Annotated[
        str,
        typer.Option(
            help="Second stage over the --shortlist Hamming-nearest films: 'none' (default) "
            "keeps Hamming order, ties by index order; 'asymmetric' orders them by <f_q, b>, "
            "the query's float outputs against each film's ±1 code (nothing extra stored; "
            "tells apart unequal codes at one distance, not equal codes); 'floats' by cosine "
            "to each film's stored float outputs (an index made with --store-floats; also "
            "orders equal codes). Measured gains and costs: docs/search.md."
        ),
    ] = "none",
    shortlist: Annotated[
        int | None,
        typer.Option(
            help="Hamming-nearest films re-ranked (L ≥ k; default max(10·k, 100)); ignored "
            "with --rerank none."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG: query, its heat-map, top hits.")
    ] = None,
    heatmap: Annotated[
        str,
        typer.Option(
            help="The query's heat-map in --plot: 'attention' (the network's own attention "
            "map, default) or 'gradcam' (Grad-CAM of the findings it predicts; on phantom "
            "films its peak falls on a lesion more often than the attention's). Neither is "
            "a lesion detector: docs/benchmarks-notes.md."
        ),
    ] = "attention",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Top-k most similar indexed cases for each query image, with findings and distance.

    A query image that cannot be read (missing, unreadable, corrupt) is reported with its
    reason on stderr (with --json also as its entry's "error") and the others are still
    answered. Exit status: 0 when every query was searched, 1 when some query could not
    be read, 2 for a usage error or an index/model problem.
    """
    _setup_logging(verbose)
    from cxrhash.retrieve import search_images

    results = search_images(
        images,
        index_dir,
        k=k,
        checkpoint=checkpoint,
        rerank=rerank,
        shortlist=shortlist,
        heatmap=heatmap,
    )
    failed = [r for r in results if r.error is not None]
    if as_json:
        print(json.dumps([_result_json(r) for r in results], indent=2))
    else:
        for r in results:
            if r.error is None:
                _print_hits(r)
    for r in failed:
        err.print(
            f"error: query {r.path}: {r.error}", markup=False, highlight=False, soft_wrap=True
        )
    if plot is not None and len(failed) < len(results):
        from cxrhash.visualize import write_retrieval_figure

        write_retrieval_figure(results, plot)
        if not as_json:
            console.print(f"figure: {plot}")
    if failed:
        err.print(f"{len(failed)} of {len(results)} queries could not be read", soft_wrap=True)
        raise typer.Exit(code=1)


def _result_json(r: QueryResult) -> dict:
    """A query's JSON entry: ``error`` is null when it was searched, else why not."""
    return {
        "query": r.path,
        "error": r.error,
        "predicted": r.predicted,
        "hits": [
            {
                "rank": h.rank + 1,
                "case_id": h.case_id,
                "distance": h.distance,
                "score": h.score,
                "findings": h.findings,
            }
            for h in r.hits
        ],
    }


def _print_hits(r: QueryResult) -> None:
    reranked = any(h.score is not None for h in r.hits)
    table = Table(title=f"query {r.path}")
    table.add_column("rank", justify="right")
    table.add_column("case")
    table.add_column("Hamming", justify="right")
    if reranked:
        table.add_column("re-rank score", justify="right")
    table.add_column("findings")
    for h in r.hits:
        score = [f"{h.score:.4f}"] if reranked and h.score is not None else []
        table.add_row(str(h.rank + 1), h.case_id, str(h.distance), *score, h.findings)
    console.print(table)


@app.command()
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


@app.command()
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


@app.command()
def bench(
    out: Annotated[
        Path, typer.Option(help="Bench folder (runs, cached splits/features, report/).")
    ],
    data: Annotated[
        str | None, typer.Option(help=DATA_HELP + " Omit to score only --external codes.")
    ] = None,
    profile: Annotated[
        str, typer.Option(help=f"Training profile of every deep cell: {', '.join(PROFILES)}.")
    ] = "bench",
    methods: Annotated[
        str, typer.Option(help="Comma-separated deep methods ('' for none).")
    ] = ",".join(PAPER_METHODS + DEEP_BASELINES),
    shallow: Annotated[
        str,
        typer.Option(help="Comma-separated shallow baselines on frozen features ('' for none)."),
    ] = ",".join(SHALLOW),
    bits: Annotated[str, typer.Option(help="Comma-separated code lengths.")] = "16,32,64",
    seeds: Annotated[
        str, typer.Option(help="Comma-separated seeds (split, init, order).")
    ] = "0,1,2",
    ablations: Annotated[
        bool, typer.Option(help="Add the attention-fusion and OSDH ablations (and scratch vs C2L).")
    ] = True,
    ablation_bits: Annotated[int, typer.Option(help="Code length of the ablation cells.")] = 32,
    pretrained: Annotated[
        Path | None,
        typer.Option(
            help="Backbone weights (e.g. `cxrhash pretrain` OUT/backbone.pt) that initialise every "
            "deep cell; shallow baselines hash its frozen features; --pretrain-methods are also "
            "trained from scratch to measure what it buys."
        ),
    ] = None,
    pretrain_methods: Annotated[
        str, typer.Option(help="Methods also trained from scratch when --pretrained is given.")
    ] = "attention-fusion,saliency-fusion",
    external: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=DIR of another toolkit's codes (query_codes.npy, db_codes.npy, "
            "query_labels.npy, db_labels.npy; optional label_names.txt, and bits.txt when "
            "codes are uint8 0/1), scored like the grid's cells, `No Finding` class included. "
            "Repeatable."
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option(help="Cells run in parallel (threads split between them).")
    ] = 1,
    budget_minutes: Annotated[
        float | None, typer.Option(help="Start no new cell after this many minutes.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the profile's epochs.")] = None,
    image_size: Annotated[int | None, typer.Option(help="Override the profile's size.")] = None,
    backbone: Annotated[str | None, typer.Option(help="Override the profile's backbone.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run methods × bits × seeds on one dataset and write Table 1/2, ablations and plots.

    Resumable: finished cells are kept in OUT/cells and skipped when the same
    command runs again; an interrupted training resumes from its last epoch.
    The report is OUT/report/report.md, report.html (one self-contained page),
    PNG plots and results.json.
    """
    _setup_logging(verbose)
    from cxrhash.bench.grid import GridSpec
    from cxrhash.bench.runner import BenchSpec, run_bench

    def _names(text: str) -> tuple[str, ...]:
        return tuple(t.strip() for t in text.split(",") if t.strip())

    try:
        ext = {}
        for item in external or []:
            name, sep, folder = item.partition("=")
            if not sep or not name or not folder:
                raise ValueError(f"--external expects NAME=DIR, got {item!r}")
            ext[name] = Path(folder)
        if not data and not ext:
            raise ValueError("give --data (to run a grid) and/or --external NAME=DIR")
        grid = GridSpec(
            methods=_names(methods),
            shallow=_names(shallow),
            bits=tuple(int(b) for b in _names(bits)),
            seeds=tuple(int(s) for s in _names(seeds)),
            ablations=ablations,
            ablation_bits=ablation_bits,
            pretrained=pretrained is not None,
            pretrain_methods=_names(pretrain_methods),
        )
        overrides = {"epochs": epochs, "image_size": image_size, "backbone": backbone}
        spec = BenchSpec(
            data=data or "",
            profile=profile,
            grid=grid,
            overrides={k: v for k, v in overrides.items() if v is not None},
            pretrained=str(pretrained) if pretrained else None,
        )
        _check_bench_names(spec)
        summary = run_bench(
            spec,
            out,
            jobs=jobs,
            budget_minutes=budget_minutes,
            external=ext,
            progress=not quiet,
            command="cxrhash bench " + " ".join(sys.argv[2:]),
        )
    except (ValueError, FileNotFoundError, KeyError) as exc:
        _fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))
    console.print(
        f"{summary['done']} cells in the report; {len(summary['pending'])} not run; "
        f"{len(summary['failed'])} failed"
    )
    console.print(f"report: {summary['report']}")
    if summary["failed"]:
        raise typer.Exit(code=1)


def _check_bench_names(spec: BenchSpec) -> None:
    """Unknown method, shallow baseline or profile names fail before any work starts."""
    from cxrhash.evaluation.shallow import SHALLOW_METHODS
    from cxrhash.methods import METHODS

    for name in spec.grid.methods + spec.grid.pretrain_methods:
        METHODS.get(name)
    unknown = [s for s in spec.grid.shallow if s not in SHALLOW_METHODS]
    if unknown:
        raise ValueError(f"unknown shallow baseline(s) {unknown}; known: {sorted(SHALLOW_METHODS)}")
    if spec.profile not in PROFILES:
        raise ValueError(f"unknown profile {spec.profile!r}; known: {', '.join(PROFILES)}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Working folder for data, run and figures.")] = Path(
        "cxrhash-demo"
    ),
    n_images: Annotated[int, typer.Option(help="Phantom images to generate.")] = 1000,
    epochs: Annotated[int | None, typer.Option(help="Override the demo profile's epochs.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Phantom data → train on CPU → index → search → retrieval table and PNG (a few minutes)."""
    _setup_logging(False)
    from cxrhash.demo import run_demo

    run_demo(out, n_images=n_images, epochs=epochs, seed=seed, console=console)


def main() -> None:  # pragma: no cover - console entry point wrapper
    """Entry point that turns known user errors into a short message and exit code 2."""
    try:
        app()
    except (ValueError, FileNotFoundError, KeyError) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
