"""The CLI's dataset spec ``SCHEME:PATH[?key=value&...]``, opened with the scheme's reader."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl

from cxrhash.data.dataset import CXRDataset
from cxrhash.data.errors import DataFormatError
from cxrhash.data.labels import PHANTOM_PATHOLOGIES
from cxrhash.data.readers.chestmnist import read_chestmnist
from cxrhash.data.readers.chexpert import read_chexpert
from cxrhash.data.readers.folder import read_folder
from cxrhash.data.readers.nih import read_nih, read_nih_dir


def _open_nih(path: Path, opts: dict[str, str], size: int) -> CXRDataset:
    kwargs: dict = {"image_size": size, "on_missing": opts.get("on_missing", "error")}
    if "official_split" in opts:
        kwargs["official_split"] = Path(opts["official_split"])
    if "pathologies" in opts:
        value = opts["pathologies"]
        kwargs["pathologies"] = "auto" if value == "auto" else value.split(",")
    return read_nih_dir(path, **kwargs) if path.is_dir() else read_nih(path, **kwargs)


def _open_chexpert(path: Path, opts: dict[str, str], size: int) -> CXRDataset:
    return read_chexpert(
        path,
        Path(opts["root"]) if "root" in opts else None,
        uncertain=opts.get("uncertain", "ones"),
        frontal_only=opts.get("frontal_only", "false").lower() in ("1", "true", "yes"),
        image_size=size,
    )


def _open_chestmnist(path: Path, opts: dict[str, str], size: int) -> CXRDataset:
    return read_chestmnist(path, opts.get("split") or None, image_size=size)


def _open_folder(path: Path, opts: dict[str, str], size: int) -> CXRDataset:
    if "csv" not in opts:
        raise DataFormatError(f"folder:{path} needs ?csv=PATH naming the label CSV")
    kwargs = {
        k: opts[k] for k in ("image_column", "label_column", "sep", "on_missing") if k in opts
    }
    patient = opts.get("patient_column", "patient_id")
    return read_folder(
        path,
        Path(opts["csv"]),
        patient_column=None if patient in ("", "none") else patient,
        image_size=size,
        **kwargs,
    )


def _open_phantom(path: Path, opts: dict[str, str], size: int) -> CXRDataset:
    return read_nih(path / "labels.csv", image_size=size, pathologies=PHANTOM_PATHOLOGIES)


DICOMWEB = "dicomweb"
_SCHEMES: dict[str, tuple[Callable[[Path, dict[str, str], int], CXRDataset], tuple[str, ...]]] = {
    "nih": (_open_nih, ("official_split", "on_missing", "pathologies")),
    "chexpert": (_open_chexpert, ("root", "uncertain", "frontal_only")),
    "chestmnist": (_open_chestmnist, ("split",)),
    "folder": (
        _open_folder,
        ("csv", "image_column", "label_column", "patient_column", "sep", "on_missing"),
    ),
    "phantom": (_open_phantom, ()),
}


def open_dataset(spec: str, image_size: int = 224) -> CXRDataset:
    """Open a dataset from a CLI spec ``SCHEME:PATH[?key=value&...]``.

    Schemes: ``nih:CSV_OR_DIR``, ``chexpert:CSV[?uncertain=zeros&root=DIR]``,
    ``chestmnist:NPZ[?split=test]`` (all three official splits without ``split``),
    ``folder:DIR?csv=CSV``, ``phantom:DIR``, ``dicomweb:URL[?modality=CR,DX&labels=CSV...]``
    (a PACS, :mod:`cxrhash.data.dicomweb.dataset`).

    Raises:
        DataFormatError: Unknown scheme or option, with the valid ones listed.
    """
    scheme, colon, rest = spec.partition(":")
    if scheme == DICOMWEB:  # a URL, not a path: its own parser
        from cxrhash.data.dicomweb.dataset import open_dicomweb

        return open_dicomweb(spec, image_size)
    if not colon or scheme not in _SCHEMES:
        raise DataFormatError(
            f"dataset spec {spec!r}: unknown scheme {scheme!r}; expected one of "
            f"{sorted([*_SCHEMES, DICOMWEB])} as SCHEME:PATH[?key=value&...]"
        )
    location, _, query = rest.partition("?")
    if not location:
        raise DataFormatError(f"dataset spec {spec!r}: no path after {scheme}:")
    opener, allowed = _SCHEMES[scheme]
    opts = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise DataFormatError(
            f"dataset spec {spec!r}: unknown option(s) {unknown} for {scheme}; "
            f"allowed: {list(allowed)}"
        )
    return opener(Path(location).expanduser(), opts, image_size)
