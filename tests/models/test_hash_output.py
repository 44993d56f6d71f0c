import torch

from cxrhash.models.output import HashOutput, binarize


def test_binarize_maps_zero_to_one_and_negative_to_zero():
    h = torch.tensor([[-0.7, 0.0, 0.3, -1e-9], [1.0, -1.0, 0.0, 2.0]])
    bits = binarize(h)
    assert bits.dtype == torch.bool
    assert bits.tolist() == [[False, True, True, False], [True, False, True, True]]


def test_binarize_detaches_and_hashoutput_defaults():
    h = torch.randn(3, 5, requires_grad=True)
    assert not binarize(h).requires_grad
    out = HashOutput(hash=h, logits=torch.zeros(3, 2), features=torch.zeros(3, 4))
    assert out.attention is None
