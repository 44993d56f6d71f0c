import torch
import torch.nn.functional as F

from cxrhash.models.refinement import FeatureRefinement


def _avg3x3_loop(x):
    b, c, h, w = x.shape
    out = torch.empty_like(x)
    for y in range(h):
        for xx in range(w):
            ys = slice(max(0, y - 1), min(h, y + 2))
            xs = slice(max(0, xx - 1), min(w, xx + 2))
            out[:, :, y, xx] = x[:, :, ys, xs].mean(dim=(2, 3))
    return out


def test_forward_equals_residual_then_avgpool_then_gap_then_linear():
    torch.manual_seed(0)
    block = FeatureRefinement(in_channels=6, out_dim=5, width=4).double()
    for bn in (block.reduce[1], block.residual[1]):  # non-trivial running statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    block.eval()
    x = torch.randn(3, 6, 4, 5, dtype=torch.float64)

    def bn(mod, t):
        return F.batch_norm(t, mod.running_mean, mod.running_var, mod.weight, mod.bias, False)

    r = F.relu(bn(block.reduce[1], F.conv2d(x, block.reduce[0].weight)))
    r = r + F.relu(bn(block.residual[1], F.conv2d(r, block.residual[0].weight, padding=1)))
    expected = _avg3x3_loop(r).mean(dim=(2, 3)) @ block.proj.weight.T + block.proj.bias
    with torch.no_grad():
        got = block(x)
    assert got.shape == (3, 5)
    torch.testing.assert_close(got, expected)


def test_default_output_is_256_d():
    assert FeatureRefinement(32)(torch.randn(2, 32, 3, 3)).shape == (2, 256)
