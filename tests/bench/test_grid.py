"""The bench grid: cells, identifiers, ablations."""

from __future__ import annotations

import pytest

from cxrhash.bench.grid import AF_ABLATIONS, OSDH_ABLATIONS, GridSpec, build_grid


def test_grid_holds_every_method_bits_seed_once_plus_ablations() -> None:
    spec = GridSpec(
        methods=("attention-fusion", "osdh", "dsh"),
        shallow=("itq",),
        bits=(16, 32),
        seeds=(0, 1),
        pretrained=True,
    )
    cells = build_grid(spec)
    ids = [c.cell_id for c in cells]
    assert len(ids) == len(set(ids))
    main = [c for c in cells if c.group == "main"]
    assert len(main) == (3 + 1) * 2 * 2
    abl = [c for c in cells if c.group == "ablation"]
    per_seed = len(AF_ABLATIONS) + len(OSDH_ABLATIONS) + 1  # + attention-fusion from scratch
    assert len(abl) == per_seed * 2 and all(c.bits == 32 for c in abl)
    rank_only = next(c for c in abl if c.variant == "ranking-only")
    assert rank_only.method_params == {"lambda_c": 0.0}
    assert [c.kind for c in cells[:4]] == ["shallow"] * 4  # cheap cells first
    assert "deep-osdh-ranking-only-32b-s1" in ids
    # one shared initialisation: everything pretrained except the scratch comparison cells
    deep = [c for c in cells if c.kind == "deep"]
    assert all(c.pretrained == (c.variant != "scratch") for c in deep)
    assert sum(c.variant == "scratch" for c in deep) == 2


def test_no_ablation_for_methods_not_in_the_grid() -> None:
    cells = build_grid(GridSpec(methods=("dsh",), shallow=(), bits=(16,), seeds=(0,)))
    assert [c.cell_id for c in cells] == ["deep-dsh-16b-s0"]


def test_empty_bits_is_an_error() -> None:
    with pytest.raises(ValueError, match="bit length"):
        build_grid(GridSpec(bits=()))


def test_scratch_cells_train_the_full_model_without_pretrained_weights() -> None:
    from cxrhash.bench.cells import deep_config
    from cxrhash.bench.grid import Cell
    from cxrhash.config import make_config

    base = make_config("test", data="phantom:x")
    scratch = deep_config(
        base, Cell("deep", "attention-fusion", 32, 0, "ablation", "scratch"), "w.pt"
    )
    assert scratch.variant == "full" and scratch.backbone_weights is None
    abl = Cell("deep", "attention-fusion", 32, 0, "ablation", "no-fmax", pretrained=True)
    cfg = deep_config(base, abl, "w.pt")
    assert cfg.variant == "no-fmax" and cfg.backbone_weights == "w.pt"
