import math

import torch

from cxrhash.losses.pairs import pair_levels, pair_similarity, upper_pairs

NAN = math.nan


def test_levels_and_similarity_match_set_intersections():
    labels = torch.tensor(
        [[1.0, 0, 1, NAN], [1, 1, 1, 0], [0, 0, 0, 1], [NAN, NAN, NAN, NAN], [0, 0, 0, 1]]
    )
    sets = [{c for c, v in enumerate(row.tolist()) if v == 1} for row in labels]
    levels, sim = pair_levels(labels), pair_similarity(labels)
    for i in range(5):
        for j in range(5):
            assert levels[i, j] == len(sets[i] & sets[j])
            assert sim[i, j] == float(len(sets[i] & sets[j]) >= 1)
    assert not torch.isnan(levels).any()
    assert levels[0, 1] == 2 and sim[3, 3] == 0  # unknown-only item shares nothing


def test_upper_pairs_lists_each_pair_once_in_row_order():
    i, j = upper_pairs(4)
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == [
        (a, b) for a in range(4) for b in range(a + 1, 4)
    ]
    assert upper_pairs(1)[0].numel() == 0
