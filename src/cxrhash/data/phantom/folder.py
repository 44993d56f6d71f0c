"""The phantom as a dataset folder in NIH ChestX-ray14 layout: writing it, reading its masks."""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from cxrhash.data.labels import NO_FINDING
from cxrhash.data.phantom.findings import PHANTOM_FINDINGS
from cxrhash.data.phantom.generate import PhantomSample, generate_phantom

LOG = logging.getLogger(__name__)

LABEL_COLUMNS = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "View Position",
    "OriginalImage[Width",
    "Height]",
]


def write_phantom_dataset(
    out_dir: Path, n: int, size: int = 128, *, seed: int = 0, **kw: object
) -> Path:
    """Write a phantom dataset in NIH ChestX-ray14 layout.

    Writes ``out_dir/images/<case_id>`` (8-bit grey PNG), then
    ``out_dir/masks.npz`` (``case_ids``, ``findings``, ``masks`` bit-packed
    along the last axis; read it with ``load_phantom_masks``), and last
    ``out_dir/labels.csv`` (``Image Index``, ``Finding Labels``,
    ``Follow-up #``, ``Patient ID``, ``View Position``,
    ``OriginalImage[Width``, ``Height]``). The CSV is renamed into place only
    after every image exists, so an interrupted run never leaves a CSV that
    names a missing image.

    Args:
        out_dir: dataset folder (created if missing).
        n: number of images.
        size: image side in pixels.
        seed: random seed.
        **kw: passed on to ``generate_phantom`` (``n_patients``, ``p_normal``,
            ``max_findings``).

    Returns:
        ``out_dir`` as a ``Path``.
    """
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    samples = generate_phantom(n, size, seed=seed, **kw)  # type: ignore[arg-type]
    if n > 200:
        from tqdm import tqdm

        samples = tqdm(samples, total=n, desc="phantom", unit="img")
    rows, packed = _write_images(samples, image_dir, size)
    case_ids = [row[0] for row in rows]
    _replace_atomically(out_dir / "masks.npz", lambda tmp: _save_masks(tmp, case_ids, packed, size))
    _replace_atomically(out_dir / "labels.csv", lambda tmp: _save_labels_csv(tmp, rows))
    LOG.info("wrote %d phantom images to %s", len(rows), out_dir)
    return out_dir


def _write_images(
    samples: Iterable[PhantomSample], image_dir: Path, size: int
) -> tuple[list[list[str]], list[np.ndarray]]:
    """Save each film as a PNG; return its ``labels.csv`` row and its bit-packed masks."""
    rows: list[list[str]] = []
    packed: list[np.ndarray] = []
    visits: dict[str, int] = {}
    for sample in samples:
        Image.fromarray(sample.image).save(image_dir / sample.case_id)
        visit = visits.get(sample.patient_id, 0)
        visits[sample.patient_id] = visit + 1
        rows.append(
            [
                sample.case_id,
                _finding_labels(sample.labels),
                str(visit),
                sample.patient_id,
                "PA",
                str(size),
                str(size),
            ]
        )
        packed.append(np.packbits(sample.masks, axis=-1))
    return rows, packed


def _finding_labels(labels: np.ndarray) -> str:
    names = [name for name, v in zip(PHANTOM_FINDINGS, labels, strict=True) if v > 0]
    return "|".join(names) if names else NO_FINDING


def _save_masks(path: Path, case_ids: list[str], packed: list[np.ndarray], size: int) -> None:
    with open(path, "wb") as fh:
        np.savez_compressed(
            fh,
            case_ids=np.array(case_ids, dtype=str),
            findings=np.array(PHANTOM_FINDINGS, dtype=str),
            size=np.int64(size),
            masks=np.stack(packed) if packed else np.zeros((0, 6, size, -(-size // 8)), np.uint8),
        )


def _save_labels_csv(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(LABEL_COLUMNS)
        writer.writerows(rows)


def _replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp_path)`` then rename over ``path`` in one step."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_phantom_masks(out_dir: Path) -> tuple[list[str], np.ndarray]:
    """Read ``masks.npz`` written by ``write_phantom_dataset``.

    Returns:
        ``(case_ids, masks)`` with ``masks`` an ``N×F×S×S`` bool array whose
        second axis follows ``PHANTOM_FINDINGS``.

    Raises:
        FileNotFoundError: if ``out_dir/masks.npz`` is missing.
    """
    path = Path(out_dir) / "masks.npz"
    with np.load(path) as data:
        size = int(data["size"])
        masks = np.unpackbits(data["masks"], axis=-1, count=size).astype(bool)
        case_ids = [str(c) for c in data["case_ids"]]
    return case_ids, masks
