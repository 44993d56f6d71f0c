"""The bench grid: which cells (method × bits × seed, plus ablations) a bench run holds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PAPER_METHODS = ("attention-fusion", "osdh", "semantic-attention", "saliency-fusion")
DEEP_BASELINES = ("dh", "dsh", "dpsh", "hashnet", "drh", "ath")
SHALLOW = ("lsh", "itq", "ssh", "sh")
AF_ABLATIONS = ("no-maxp-avgp", "no-fmax", "global-only", "local-only")
# OSDH ablations of Chen 2018 Table 2: λ_C = 0 (ranking only) and λ_R = 0 (classification only)
OSDH_ABLATIONS: dict[str, dict[str, float]] = {
    "ranking-only": {"lambda_c": 0.0},
    "classification-only": {"lambda_r": 0.0},
}


@dataclass(frozen=True)
class Cell:
    """One unit of bench work; ``cell_id`` names its folder and result file."""

    kind: str  # "deep" | "shallow"
    method: str
    bits: int
    seed: int
    group: str = "main"  # "main" | "ablation"
    variant: str = ""
    method_params: dict[str, float] = field(default_factory=dict, hash=False, compare=False)
    pretrained: bool = False

    @property
    def cell_id(self) -> str:
        """A file-name-safe identifier, e.g. ``deep-osdh-ranking-only-32b-s0``."""
        parts = [self.kind, self.method] + ([self.variant] if self.variant else [])
        return "-".join(parts) + f"-{self.bits}b-s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for the cell's JSON)."""
        return asdict(self)


@dataclass
class GridSpec:
    """What to run: methods × bits × seeds, the shallow baselines and the ablations."""

    methods: tuple[str, ...] = PAPER_METHODS + DEEP_BASELINES
    shallow: tuple[str, ...] = SHALLOW
    bits: tuple[int, ...] = (16, 32, 64)
    seeds: tuple[int, ...] = (0, 1, 2)
    ablations: bool = True
    ablation_bits: int = 32
    pretrained: bool = False  # a C2L (or other) backbone file is given
    pretrain_methods: tuple[str, ...] = ("attention-fusion",)


def build_grid(spec: GridSpec) -> list[Cell]:
    """Every cell of ``spec``, cheapest kinds first (shallow, then deep, then ablations).

    With ``pretrained``, every deep cell (main grid and ablations) starts from
    the pretrained backbone, so all methods share one initialisation, and extra
    ablation cells train ``pretrain_methods`` from scratch (variant ``scratch``)
    at ``ablation_bits`` to measure what pretraining buys.
    """
    if not spec.bits or not spec.seeds:
        raise ValueError("the grid needs at least one bit length and one seed")
    pre = spec.pretrained
    cells: list[Cell] = []
    for bits in spec.bits:
        for seed in spec.seeds:
            cells += [Cell("shallow", m, bits, seed) for m in spec.shallow]
    for seed in spec.seeds:
        for bits in spec.bits:
            cells += [Cell("deep", m, bits, seed, pretrained=pre) for m in spec.methods]
    if spec.ablations:
        for seed in spec.seeds:
            cells += _ablation_cells(spec, seed)
    return cells


def _ablation_cells(spec: GridSpec, seed: int) -> list[Cell]:
    """One seed's ablations: attention-fusion's and OSDH's variants (when the grid runs
    them) and, with a pretrained backbone, ``pretrain_methods`` trained from scratch."""
    b, pre = spec.ablation_bits, spec.pretrained
    cells: list[Cell] = []
    if "attention-fusion" in spec.methods:
        cells += [
            Cell("deep", "attention-fusion", b, seed, "ablation", v, pretrained=pre)
            for v in AF_ABLATIONS
        ]
    if "osdh" in spec.methods:
        cells += [
            Cell("deep", "osdh", b, seed, "ablation", v, dict(p), pretrained=pre)
            for v, p in OSDH_ABLATIONS.items()
        ]
    if pre:
        cells += [Cell("deep", m, b, seed, "ablation", "scratch") for m in spec.pretrain_methods]
    return cells
