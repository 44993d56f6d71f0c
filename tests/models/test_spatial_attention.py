import math

import pytest
import torch

from cxrhash.models.attention import SpatialAttention


def _mlp(att, v):
    w1, b1 = att.mlp[0].weight.view(-1), att.mlp[0].bias
    w2, b2 = att.mlp[2].weight.view(-1), att.mlp[2].bias
    return sum(w2[h] * max(0.0, w1[h] * v + b1[h]) for h in range(len(b1))) + b2[0]


def _reference(att, fp):
    """Loop re-computation of eq. 1–3 for one image fp (K×h×w)."""
    k, h, w = fp.shape

    def window_max(c, y, x):
        return max(
            fp[c, yy, xx]
            for yy in range(y - 1, y + 2)
            for xx in range(x - 1, x + 2)
            if 0 <= yy < h and 0 <= xx < w
        )

    desc = {
        "maxp": [[max(fp[c, y, x] for c in range(k)) for x in range(w)] for y in range(h)],
        "avgp": [[sum(fp[c, y, x] for c in range(k)) / k for x in range(w)] for y in range(h)],
        "max": [
            [sum(window_max(c, y, x) for c in range(k)) / k for x in range(w)] for y in range(h)
        ],
    }
    maps = [
        [[_mlp(att, desc[d][y][x]) for x in range(w)] for y in range(h)] for d in att.descriptors
    ]
    wc, bc = att.fuse.weight[0], att.fuse.bias[0]
    out = torch.empty(h, w, dtype=fp.dtype)
    for y in range(h):
        for x in range(w):
            acc = bc
            for d in range(len(maps)):
                for dy in range(3):
                    for dx in range(3):
                        yy, xx = y + dy - 1, x + dx - 1
                        if 0 <= yy < h and 0 <= xx < w:
                            acc = acc + wc[d, dy, dx] * maps[d][yy][xx]
            out[y, x] = math.tanh(acc)
    return out


@pytest.mark.parametrize("descriptors", [("maxp", "avgp", "max"), ("max",), ("maxp", "avgp")])
def test_forward_matches_loop_recomputation(descriptors):
    torch.manual_seed(1)
    att = SpatialAttention(descriptors, hidden=4).double()
    fp = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        m = att(fp)
        assert m.shape == (2, 1, 4, 5)
        for b in range(2):
            torch.testing.assert_close(m[b, 0], _reference(att, fp[b]))


def test_one_shared_mlp_and_fuse_width_follows_descriptors():
    att = SpatialAttention(hidden=8)
    assert sum(p.numel() for p in att.mlp.parameters()) == 1 * 8 + 8 + 8 * 1 + 1
    assert att.fuse.in_channels == 3
    assert SpatialAttention(("max",)).fuse.in_channels == 1


def test_output_in_open_interval_and_bad_descriptors():
    m = SpatialAttention()(100 * torch.randn(2, 16, 6, 6))
    assert m.abs().max() <= 1.0
    for bad in [(), ("maxp", "maxp"), ("mean",)]:
        with pytest.raises(ValueError, match="descriptors"):
            SpatialAttention(bad)


def test_replicate_padding_gives_a_constant_input_a_constant_map():
    """With zero padding a featureless map still marks its border; replication does not."""
    torch.manual_seed(0)
    fp = torch.full((1, 4, 8, 8), 0.7)
    zeros = SpatialAttention()
    replicate = SpatialAttention(padding="replicate")
    replicate.load_state_dict(zeros.state_dict())  # same weights, only the padding differs
    with torch.no_grad():
        m_zero, m_rep = zeros(fp)[0, 0], replicate(fp)[0, 0]
    assert torch.allclose(m_rep, m_rep[0, 0].expand_as(m_rep), atol=1e-6)
    assert not torch.allclose(m_zero[0, 0], m_zero[4, 4])  # a corner differs from the centre
    assert torch.allclose(m_rep[4, 4], m_zero[4, 4])  # interior cells agree
    with pytest.raises(ValueError, match="padding"):
        SpatialAttention(padding="reflect-ish")
