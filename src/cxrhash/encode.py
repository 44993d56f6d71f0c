"""Encode a dataset with a trained model, streaming batch by batch."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cxrhash.data.dataset import CXRDataset, SkippedSample, collate_skipping
from cxrhash.index.codes import pack_codes
from cxrhash.inference import Encoder, Encoding, as_engine
from cxrhash.models.output import HashOutput

LOG = logging.getLogger(__name__)


@dataclass
class Encoded:
    """Codes and embeddings of the readable images of a dataset, in dataset order."""

    hashes: np.ndarray  # N×k float32, pre-binarisation outputs
    features: np.ndarray  # N×D float32, the float embedding (upper bound)
    labels: np.ndarray  # N×P dataset labels (1/0/NaN)
    indices: np.ndarray  # dataset indices of the encoded items
    case_ids: list[str]
    skipped: list[SkippedSample] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def codes(self) -> np.ndarray:
        """Packed sign codes (N×ceil(k/8) uint8)."""
        return pack_codes(self.hashes >= 0)


def make_loader(
    dataset: CXRDataset, batch_size: int, num_workers: int = 0, **kw: object
) -> DataLoader:
    """A DataLoader that drops unreadable images into ``batch['skipped']``."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_skipping,
        persistent_workers=False,
        **kw,  # type: ignore[arg-type]
    )


@torch.no_grad()
def iter_engine_batches(
    encoder: Encoder,
    dataset: CXRDataset,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "encode",
) -> Iterator[tuple[Encoding | None, dict]]:
    """Yield ``(Encoding, batch)`` for each batch (``None`` when no film of it was readable);
    skipped images are in ``batch['skipped']``. ``encoder``: a model or an engine."""
    engine = as_engine(encoder)
    loader = make_loader(dataset, batch_size, num_workers)
    bar = tqdm(total=len(dataset), desc=desc, unit="img", disable=not progress, leave=False)
    try:
        for batch in loader:
            n = len(batch["case_id"]) + len(batch["skipped"])
            if batch["img"] is not None and len(batch["case_id"]) > 0:
                yield engine.encode(batch["img"]), batch
            else:
                yield None, batch
            bar.update(n)
    finally:
        bar.close()


def iter_encoded_batches(
    model: Encoder,
    dataset: CXRDataset,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "encode",
) -> Iterator[tuple[HashOutput | None, dict]]:
    """Yield ``(HashOutput, batch)`` for each batch; skipped images are in ``batch['skipped']``."""
    for enc, batch in iter_engine_batches(
        model, dataset, batch_size=batch_size, num_workers=num_workers, progress=progress, desc=desc
    ):
        yield (None if enc is None else enc.output), batch


def encode_dataset(
    model: Encoder,
    dataset: CXRDataset,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "encode",
) -> Encoded:
    """Encode every readable image of ``dataset`` (hashes, features, labels)."""
    hashes, feats, labels, idx, cases = [], [], [], [], []
    skipped: list[SkippedSample] = []
    t0 = time.perf_counter()
    for out, batch in iter_encoded_batches(
        model, dataset, batch_size=batch_size, num_workers=num_workers, progress=progress, desc=desc
    ):
        skipped.extend(batch["skipped"])
        if out is None:
            continue
        hashes.append(out.hash.float().cpu().numpy())
        feats.append(out.features.float().cpu().numpy())
        labels.append(batch["lab"].numpy())
        idx.append(batch["idx"].numpy())
        cases.extend(batch["case_id"])
    seconds = time.perf_counter() - t0
    for s in skipped:
        LOG.warning("skipped unreadable image %s: %s", s.path or s.case_id, s.reason)
    if not hashes:
        raise ValueError(f"no readable image in {dataset.name} ({len(skipped)} skipped)")
    return Encoded(
        hashes=np.concatenate(hashes),
        features=np.concatenate(feats),
        labels=np.concatenate(labels),
        indices=np.concatenate(idx),
        case_ids=cases,
        skipped=skipped,
        seconds=seconds,
    )
