"""Merge one index into another: how the parts of a distributed build become one index.

The rows of the source index are appended to the target as the source stored them (codes,
float rows, pseudonyms, findings, kept paths), in atomic chunks, so no pseudonym key and
no model are needed. Rows whose stored id the target already holds are skipped: a merge
interrupted after some chunks is completed by running it again, with nothing twice. The
source's closeness sample (:mod:`cxrhash.index.calibration`) joins the target's, each
film weighted by the films it stands for.
"""

from __future__ import annotations

import logging

import numpy as np

from cxrhash.index.calibration import MIN_SAMPLE, merge_samples, read_sample, save_sample
from cxrhash.index.errors import IndexMismatchError
from cxrhash.index.store import HashIndex
from cxrhash.index.writing import Batch

LOG = logging.getLogger(__name__)
MERGE_CHUNK = 1 << 16


def check_mergeable(target: HashIndex, source: HashIndex) -> None:
    """IndexMismatchError unless ``source``'s rows can join ``target`` as they are stored:
    same bits, model, pseudonym key, float store and source-name policy."""
    facts = {
        "bits": (target.bits, source.bits),
        "model": (target.model_id, source.model_id),
        "pseudonym key": (target.key_id, source.key_id),
        "float store": (target.stores_floats, source.stores_floats),
        "source names": (target.keeps_source_names, source.keeps_source_names),
    }
    wrong = [
        f"{name} {theirs!r} (target: {ours!r})"
        for name, (ours, theirs) in facts.items()
        if ours != theirs
    ]
    if wrong:
        raise IndexMismatchError(
            f"the index at {source.path} cannot be merged into {target.path}: it has "
            + "; ".join(wrong)
        )


def merge_index(target: HashIndex, source: HashIndex, *, chunk: int = MERGE_CHUNK) -> int:
    """Append every live row of ``source`` that ``target`` does not hold yet (by stored id),
    ``chunk`` rows per atomic commit, then merge its closeness sample; returns rows added.

    Raises:
        IndexMismatchError: the two indexes differ in bits, model, key or options.
        IndexCorruptError: a source block fails its checksum (nothing of it is added).
        ConcurrentWriteError: another process writes to ``target``.
    """
    check_mergeable(target, source)
    added = 0
    for lo in range(0, source.n_rows, chunk):
        batch = _absent(target, source.stored_batch(lo, lo + chunk))
        target.add_stored(batch, source.key_id)
        added += len(batch.stored_ids)
    merge_calibration(target, source)
    return added


def merge_calibration(target: HashIndex, source: HashIndex) -> bool:
    """Fold ``source``'s closeness sample into ``target``'s (written when the union holds
    enough films); whether a sample was written."""
    new = read_sample(source.path, source.model_id, source.bits)
    if new is None:
        return False
    merged = merge_samples(read_sample(target.path, target.model_id, target.bits), new)
    if len(merged) < MIN_SAMPLE:
        return False
    save_sample(target.path, merged)
    return True


def _absent(target: HashIndex, batch: Batch) -> Batch:
    """The rows of ``batch`` whose stored ids ``target`` does not hold."""
    held = target.stored_present(batch.stored_ids)
    keep = np.flatnonzero(~np.asarray(held, bool))
    if len(keep) == len(batch.stored_ids):
        return batch
    if len(keep):
        LOG.info("%d rows of %d are in the target already", len(held) - len(keep), len(held))

    def pick(values: list) -> list:
        return [values[i] for i in keep]

    return Batch(
        codes=batch.codes[keep],
        floats=None if batch.floats is None else batch.floats[keep],
        case_ids=pick(batch.case_ids),
        stored_ids=pick(batch.stored_ids),
        findings=pick(batch.findings),
        patient_hashes=pick(batch.patient_hashes),
        source_paths=pick(batch.source_paths),
    )
