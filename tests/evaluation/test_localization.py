"""Pointing game: attention peaks scored against lesion masks."""

import numpy as np
import pytest
import torch
from torch import nn

from cxrhash.evaluation.localization import attention_peaks, pointing_game
from cxrhash.models.output import HashOutput


class PeakAt(nn.Module):
    """Attention map (4×4) that peaks at a fixed cell; the rest of the output is dummy."""

    def __init__(self, cell: tuple[int, int] | None) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: torch.Tensor) -> HashOutput:
        b = x.shape[0]
        att = None
        if self.cell is not None:
            att = torch.zeros(b, 1, 4, 4)
            att[:, 0, self.cell[0], self.cell[1]] = 1.0
        return HashOutput(torch.zeros(b, 8), torch.zeros(b, 2), torch.zeros(b, 4), att)


def test_peak_of_upsampled_map_is_inside_its_cell() -> None:
    att = torch.zeros(1, 1, 4, 4)
    att[0, 0, 1, 2] = 1.0
    r, c = attention_peaks(att, 32)[0]
    assert 8 <= r < 16 and 16 <= c < 24


def test_hits_misses_and_chance() -> None:
    images = np.zeros((3, 32, 32), np.float32)
    masks = np.zeros((3, 2, 32, 32), bool)
    masks[0, 0, 8:16, 16:24] = True  # lesion where the peak is
    masks[1, 1, 24:32, 0:8] = True  # lesion elsewhere
    # image 2 has no lesion and is not scored
    res = pointing_game(PeakAt((1, 2)), images, masks)
    assert res.n_images == 2
    assert res.hit_rate == pytest.approx(0.5)
    assert res.chance_rate == pytest.approx(64 / 1024)


def test_model_without_attention_is_refused() -> None:
    masks = np.ones((1, 1, 8, 8), bool)
    with pytest.raises(ValueError, match="no attention"):
        pointing_game(PeakAt(None), np.zeros((1, 8, 8), np.float32), masks)
