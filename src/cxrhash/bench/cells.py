"""Run one bench cell: train + score a deep method, fit + score a shallow one, score external codes.

Each function returns the cell's result dict (the schema ``bench.aggregate``
reads) and is meant to run in its own process, so the peak memory it reports
is the cell's own.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrhash.bench.grid import AF_ABLATIONS, Cell
from cxrhash.bench.scoring import score_codes
from cxrhash.config import TrainConfig
from cxrhash.data.labels import NO_FINDING, label_names, relevance_labels, with_no_finding_np
from cxrhash.data.readers import open_dataset
from cxrhash.data.splits import load_split
from cxrhash.encode import Encoded, encode_dataset
from cxrhash.evaluation.evaluate import ROW_HASH, evaluate_encoded, peak_memory_mb
from cxrhash.evaluation.shallow import fit_shallow
from cxrhash.index.codes import AmbiguousCodesError, as_packed_codes
from cxrhash.models.backbones import create_backbone
from cxrhash.models.output import HashOutput
from cxrhash.training.checkpoint import load_model
from cxrhash.training.trainer import train

LOG = logging.getLogger(__name__)

# protocol → (query part, database part); see training.evaluate_run
PROTOCOL_PARTS = {"strict": ("query", "database"), "literature": ("query", "train")}


def _relevance(labels: np.ndarray, no_finding: bool) -> np.ndarray:
    return relevance_labels(with_no_finding_np(labels, no_finding))


def deep_config(base: TrainConfig, cell: Cell, pretrained: str | None) -> TrainConfig:
    """The training config of a deep cell: the bench's base config + the cell's settings."""
    d = json.loads(base.to_json())
    d.update(method=cell.method, bits=cell.bits, seed=cell.seed, method_params=cell.method_params)
    if cell.method == "attention-fusion":
        d["variant"] = cell.variant if cell.variant in AF_ABLATIONS else "full"
    d["backbone_weights"] = pretrained if cell.pretrained else None
    return TrainConfig.from_dict(d)


def run_deep_cell(
    cell: Cell, base: TrainConfig, run_dir: Path, split_file: Path, pretrained: str | None
) -> dict[str, Any]:
    """Train (resuming an interrupted run) and score a deep method under both protocols."""
    config = deep_config(base, cell, pretrained)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "split.json").exists():
        shutil.copyfile(split_file, run_dir / "split.json")
    summary_path = run_dir / "train_summary.json"
    if not summary_path.exists():
        train(config, run_dir, resume=(run_dir / "last.pt").exists(), progress=False)
    summary = json.loads(summary_path.read_text())
    model, payload = load_model(run_dir / "best.pt")
    names = list(payload["label_names"])
    dataset = open_dataset(config.data, config.image_size)
    split = load_split(run_dir / "split.json", dataset.case_ids)
    enc: dict[str, Encoded] = {}
    t0 = time.perf_counter()
    for part in ("query", "database"):
        enc[part] = encode_dataset(
            model, dataset.subset(split[part]), batch_size=config.batch_size, progress=False
        )
    n_timed = sum(len(e.case_ids) for e in enc.values())
    feature_ms = 1e3 * (time.perf_counter() - t0) / max(n_timed, 1)
    enc["train"] = encode_dataset(
        model, dataset.subset(split["train"]), batch_size=config.batch_size, progress=False
    )
    result = _base_result(cell, config.data, names)
    result["history"] = json.loads((run_dir / "history.json").read_text())
    retrieval_ms = 0.0
    for proto, (qp, dp) in PROTOCOL_PARTS.items():
        q, db = enc[qp], enc[dp]
        q_lab = _relevance(q.labels, config.no_finding_class)
        db_lab = _relevance(db.labels, config.no_finding_class)
        scored = score_codes(q.codes, db.codes, q_lab, db_lab, cell.bits, names)
        _store(result, proto, scored)
        refs = evaluate_encoded(
            q, db, bits=cell.bits, no_finding_class=config.no_finding_class, random_seeds=3
        )
        # Every row beside the codes: float upper bound, LSH of the cell's own features,
        # the two-stage re-ranks and random codes (Table 1's italics, Table 3's references).
        result["references"][proto] = {k: v for k, v in refs.rows.items() if k != ROW_HASH}
        if proto == "strict":
            retrieval_ms = scored["retrieval_ms_per_query"]
    result["efficiency"] = {
        "feature_ms_per_image": feature_ms,
        "retrieval_ms_per_query": retrieval_ms,
        "train_seconds": summary["train_seconds"],
        "peak_memory_mb": peak_memory_mb(),
        "best_epoch": summary["best_epoch"],
    }
    return result


def _base_result(cell: Cell, data: str, names: list[str]) -> dict[str, Any]:
    return {
        **cell.to_dict(),
        "cell_id": cell.cell_id,
        "dataset": data,
        "label_names": names,
        "metrics": {},
        "references": {},
        "pr_curve": {},
        "per_finding_ap": {},
    }


def _store(result: dict[str, Any], proto: str, scored: dict[str, Any]) -> None:
    result["metrics"][proto] = scored["metrics"]
    result["pr_curve"][proto] = scored["pr_curve"]
    result["per_finding_ap"][proto] = scored["per_finding_ap"]


def run_shallow_cell(cell: Cell, features_file: Path, data: str) -> dict[str, Any]:
    """Fit a shallow hasher on cached frozen training features and score it."""
    z = np.load(features_file, allow_pickle=False)
    names = [str(n) for n in z["label_names"]]
    t0 = time.perf_counter()
    train_lab = z["train_labels"]
    hasher = fit_shallow(
        cell.method, z["train_feats"], cell.bits, train_labels=train_lab, seed=cell.seed
    )
    fit_seconds = time.perf_counter() - t0
    result = _base_result(cell, data, names)
    codes = {p: hasher.encode(z[f"{p}_feats"]) for p in ("train", "query", "database")}
    retrieval_ms = 0.0
    for proto, (qp, dp) in PROTOCOL_PARTS.items():
        scored = score_codes(
            codes[qp], codes[dp], z[f"{qp}_labels"], z[f"{dp}_labels"], cell.bits, names
        )
        _store(result, proto, scored)
        if proto == "strict":
            retrieval_ms = scored["retrieval_ms_per_query"]
    result["efficiency"] = {
        "feature_ms_per_image": float(z["feature_ms_per_image"]),
        "retrieval_ms_per_query": retrieval_ms,
        "train_seconds": fit_seconds,
        "peak_memory_mb": peak_memory_mb(),
    }
    return result


class FrozenFeatures(torch.nn.Module):
    """A backbone + global average pooling whose output ``encode_dataset`` can consume."""

    def __init__(self, body: torch.nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> HashOutput:
        """Pooled features as ``features`` (``hash``/``logits`` alias them; never binarised)."""
        f = self.body(x).mean(dim=(2, 3))
        return HashOutput(hash=f, logits=f, features=f)


def frozen_features(
    base: TrainConfig, split_file: Path, out_file: Path, pretrained: str | None
) -> None:
    """Global-average-pooled features of a frozen backbone for train/query/database (cached .npz).

    The backbone is the bench's backbone with the pretrained weights when given
    (e.g. C2L), else its random initialisation with the bench's seed 0 — the
    shallow baselines then hash random-CNN features, as the report says.
    """
    torch.manual_seed(0)
    spec = create_backbone(base.backbone, feature_stage=4, weights=pretrained)
    extractor = FrozenFeatures(spec.module).eval()
    dataset = open_dataset(base.data, base.image_size)
    split = load_split(split_file, dataset.case_ids)
    names = label_names(dataset.pathologies, base.no_finding_class)
    arrays: dict[str, Any] = {"label_names": np.array(names)}
    seconds, count = 0.0, 0
    for part in ("train", "query", "database"):
        t0 = time.perf_counter()
        enc = encode_dataset(extractor, dataset.subset(split[part]), batch_size=64, progress=False)
        seconds += time.perf_counter() - t0
        count += len(enc.case_ids)
        arrays[f"{part}_feats"] = enc.features.astype(np.float32)
        arrays[f"{part}_labels"] = _relevance(enc.labels, base.no_finding_class)
    arrays["feature_ms_per_image"] = np.float64(1e3 * seconds / max(count, 1))
    tmp = out_file.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(out_file)


EXTERNAL_FILES = ("query_codes.npy", "db_codes.npy", "query_labels.npy", "db_labels.npy")


def _declared_bits(folder: Path, bits: int | None) -> int | None:
    """The code length given by the caller, else by ``bits.txt`` in ``folder``, else ``None``."""
    path = folder / "bits.txt"
    if bits is not None or not path.exists():
        return bits
    text = path.read_text().strip()
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"{path}: expected one positive integer (the code length), got {text!r}")
    return int(text)


def _external_codes(folder: Path, bits: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Packed query and database codes and their length (see ``as_packed_codes``).

    When one file alone is ambiguous (uint8 holding only 0/1), the length the
    other file shows is used for both.
    """
    q_path, db_path = folder / "query_codes.npy", folder / "db_codes.npy"
    q_arr = np.load(q_path, allow_pickle=False)
    db_arr = np.load(db_path, allow_pickle=False)
    if bits is None:
        try:
            bits = as_packed_codes(q_arr, None, name=str(q_path))[1]
        except AmbiguousCodesError:
            try:
                bits = as_packed_codes(db_arr, None, name=str(db_path))[1]
            except AmbiguousCodesError as err:
                raise AmbiguousCodesError(
                    f"{err}; write it to {folder / 'bits.txt'} (one integer)"
                ) from None
    q_codes, k = as_packed_codes(q_arr, bits, name=str(q_path))
    db_codes, _ = as_packed_codes(db_arr, k, name=str(db_path))
    return q_codes, db_codes, k


def _external_labels(folder: Path, name: str, n_query: int, n_db: int) -> list[np.ndarray]:
    """Query and database label matrices, checked against the code counts."""
    out = []
    for what, n in (("query", n_query), ("db", n_db)):
        arr = np.load(folder / f"{what}_labels.npy", allow_pickle=False).astype(np.float32)
        if arr.ndim != 2 or len(arr) != n:
            raise ValueError(
                f"external {name!r}: {what}_labels.npy must be N×C with N = {n} "
                f"(rows of {what} codes), got shape {arr.shape}"
            )
        out.append(arr)
    if out[0].shape[1] != out[1].shape[1]:
        raise ValueError(f"external {name!r}: query and db labels have different class counts")
    return out


def _pathology_columns(folder: Path, n_columns: int) -> tuple[list[str], list[int]]:
    """Names from ``label_names.txt`` (else ``class c``) and the columns that are pathologies.

    A ``No Finding`` column is left out: it is derived from the pathologies
    exactly as for internal cells, so both are scored alike.
    """
    names_file = folder / "label_names.txt"
    names = (
        [line.strip() for line in names_file.read_text().splitlines()][:n_columns]
        if names_file.exists()
        else [f"class {c}" for c in range(n_columns)]
    )
    if len(names) != n_columns:
        raise ValueError(f"{names_file}: {len(names)} names for {n_columns} label columns")
    keep = [c for c, n in enumerate(names) if n != NO_FINDING]
    if len(keep) < n_columns:
        LOG.info("%s: the %r column is re-derived from the findings", names_file, NO_FINDING)
    return [names[c] for c in keep], keep


def score_external(
    name: str, folder: Path, bits: int | None = None, *, no_finding_class: bool = True
) -> dict[str, Any]:
    """Score another toolkit's codes as an internal cell is scored (``folder``: ``EXTERNAL_FILES``).

    Labels are N×C findings (1 / 0 / NaN) with optional ``label_names.txt`` (one
    per line); with ``no_finding_class`` (the training config's default, as for
    internal cells) a ``No Finding`` column is appended to the items with no
    positive finding, and a ``No Finding`` column of the file is replaced by
    that one. Codes: see :func:`cxrhash.index.codes.as_packed_codes`; the code
    length comes from ``bits``, else ``bits.txt`` in ``folder``, else the files
    when they tell it unambiguously.
    """
    missing = [f for f in EXTERNAL_FILES if not (folder / f).exists()]
    if missing:
        raise FileNotFoundError(f"external codes {name!r}: {folder} lacks {missing}")
    q_codes, db_codes, k = _external_codes(folder, _declared_bits(folder, bits))
    q_raw, db_raw = _external_labels(folder, name, len(q_codes), len(db_codes))
    pathologies, keep = _pathology_columns(folder, q_raw.shape[1])
    q_lab = _relevance(q_raw[:, keep], no_finding_class)
    db_lab = _relevance(db_raw[:, keep], no_finding_class)
    names = label_names(pathologies, no_finding_class)
    cell = Cell("external", f"ext:{name}", k, 0)
    result = _base_result(cell, str(folder), names)
    scored = score_codes(q_codes, db_codes, q_lab, db_lab, k, names)
    _store(result, "strict", scored)
    result["efficiency"] = {"retrieval_ms_per_query": scored["retrieval_ms_per_query"]}
    return result
