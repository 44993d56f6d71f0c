"""A bench spec from the text a user types (``cxrhash bench`` options), checked before any
work starts: comma-separated lists, ``NAME=DIR`` external codes, known names only."""

from __future__ import annotations

from pathlib import Path

from cxrhash.bench.grid import GridSpec
from cxrhash.bench.runner import BenchSpec
from cxrhash.config import PROFILES


def names_list(text: str) -> tuple[str, ...]:
    """``"a, b,,c"`` → ``("a", "b", "c")``."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def external_dirs(items: list[str]) -> dict[str, Path]:
    """``["name=dir", …]`` → ``{name: Path(dir)}``; a clear error for anything else."""
    out = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--external expects NAME=DIR, got {item!r}")
        out[name] = Path(folder)
    return out


def bench_spec(
    data: str | None,
    profile: str,
    *,
    methods: str,
    shallow: str,
    bits: str,
    seeds: str,
    ablations: bool,
    ablation_bits: int,
    pretrained: Path | None,
    pretrain_methods: str,
    overrides: dict[str, object],
) -> BenchSpec:
    """The :class:`BenchSpec` of the options as typed (lists comma-separated)."""
    try:
        bit_lengths = tuple(int(b) for b in names_list(bits))
        seed_values = tuple(int(s) for s in names_list(seeds))
    except ValueError as exc:
        raise ValueError(f"--bits and --seeds take comma-separated integers ({exc})") from None
    grid = GridSpec(
        methods=names_list(methods),
        shallow=names_list(shallow),
        bits=bit_lengths,
        seeds=seed_values,
        ablations=ablations,
        ablation_bits=ablation_bits,
        pretrained=pretrained is not None,
        pretrain_methods=names_list(pretrain_methods),
    )
    spec = BenchSpec(
        data=data or "",
        profile=profile,
        grid=grid,
        overrides={k: v for k, v in overrides.items() if v is not None},
        pretrained=str(pretrained) if pretrained else None,
    )
    check_names(spec)
    return spec


def check_names(spec: BenchSpec) -> None:
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
