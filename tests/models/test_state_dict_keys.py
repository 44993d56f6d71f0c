"""Checkpoints stay loadable: every method's state-dict keys and shapes are pinned.

``state_dict_keys.json`` holds, for each registered method (and the attention-fusion
variants and the ``batchnorm`` hash layer, which add or drop modules) built from the
``test`` profile, its state-dict keys in order with their shapes. A change here breaks
every saved ``best.pt``/``last.pt`` of that method: if it is deliberate, map the old
keys in the model's ``_load_from_state_dict`` (as ``AttentionFusionNet`` does for its
pre-``HashHead`` keys) and only then update the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cxrhash.config import make_config
from cxrhash.methods import METHODS

PINNED: dict[str, dict[str, str]] = json.loads(
    (Path(__file__).with_name("state_dict_keys.json")).read_text()
)
NUM_CLASSES = 4


def _overrides(case: str) -> tuple[str, dict[str, str]]:
    """``"attention-fusion variant=global-only"`` → the method and its config overrides."""
    method, *settings = case.split(" ")
    return method, dict(s.split("=", 1) for s in settings)


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def test_every_registered_method_is_pinned() -> None:
    assert set(METHODS.names()) <= set(PINNED)


@pytest.mark.parametrize("case", sorted(PINNED))
def test_state_dict_keys_and_shapes_are_unchanged(case: str) -> None:
    method, overrides = _overrides(case)
    config = make_config("test", method=method, **overrides)
    state = METHODS.get(method).build_model(config, NUM_CLASSES).state_dict()
    got = {k: _shape(v) for k, v in state.items()}
    expected = PINNED[case]
    assert sorted(set(expected) - set(got)) == [], "keys gone: old checkpoints will not load"
    assert sorted(set(got) - set(expected)) == [], "new keys: old checkpoints will not load"
    assert {k: v for k, v in got.items() if expected[k] != v} == {}, "shapes changed"
    assert list(got) == list(expected)
