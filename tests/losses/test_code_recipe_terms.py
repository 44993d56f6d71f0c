"""The opt-in terms of the attention-fusion loss (issue #10): graded similarity,
bit balance and decorrelation, straight-through codes."""

import itertools
import math

import pytest
import torch

from cxrhash.losses import attention_fusion_loss, contrastive_loss, pair_jaccard
from cxrhash.losses.code_regularizers import (
    bit_balance_loss,
    bit_decorrelation_loss,
    feature_geometry_loss,
)
from cxrhash.models.hash_head import HashHead, straight_through_sign
from cxrhash.models.output import HashOutput


def test_jaccard_matches_set_arithmetic() -> None:
    labels = torch.tensor(
        [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [1, math.nan, 0, 1]]
    )
    sets = [{c for c in range(4) if row[c] == 1} for row in labels.tolist()]
    s = pair_jaccard(labels)
    for i, j in itertools.product(range(5), repeat=2):
        union = sets[i] | sets[j]
        expected = len(sets[i] & sets[j]) / len(union) if union else 0.0
        assert s[i, j].item() == pytest.approx(expected)


def test_graded_contrastive_settles_partly_similar_pairs_between() -> None:
    # For one pair with similarity s the loss s·D²/2 + (1−s)·(m−D)²/2 is minimal at D = (1−s)·m.
    m, s = 4.0, 1.0 / 3.0
    dists = torch.linspace(0.0, m, 401)
    losses = [
        contrastive_loss(torch.tensor([[0.0], [d.item()]]), torch.tensor([[1.0, s], [s, 1.0]]), m)
        for d in dists
    ]
    best = dists[int(torch.stack(losses).argmin())].item()
    assert best == pytest.approx((1 - s) * m, abs=0.011)


def test_decorrelation_is_zero_for_independent_bits_and_one_for_copies() -> None:
    codes = torch.tensor(
        list(itertools.product([-1.0, 1.0], repeat=3))
    )  # all 8 codes: uncorrelated
    assert bit_decorrelation_loss(codes).item() == pytest.approx(0.0, abs=1e-6)
    copies = codes[:, :1].repeat(1, 4)
    assert bit_decorrelation_loss(copies).item() == pytest.approx(1.0, abs=1e-4)
    flipped = torch.cat([codes[:, :1], -codes[:, :1]], dim=1)  # anti-correlated counts too
    assert bit_decorrelation_loss(flipped).item() == pytest.approx(1.0, abs=1e-4)


def test_straight_through_sign_is_sign_forward_identity_backward() -> None:
    f = torch.tensor([-0.3, 0.0, 2.0], requires_grad=True)
    b = straight_through_sign(f)
    assert b.tolist() == [-1.0, 1.0, 1.0]
    (b * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert f.grad.tolist() == [1.0, 2.0, 3.0]


def test_code_pairs_loss_sees_hamming_distances_only() -> None:
    # Two outputs with the same signs but different magnitudes: the relaxed L_c
    # of a similar pair is > 0, on the codes it is 0 (their Hamming distance is 0).
    f = torch.tensor([[0.2, -0.5, 1.0], [1.5, -0.1, 0.3]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    out = HashOutput(hash=f, logits=torch.zeros(2, 2), features=torch.zeros(2, 4))
    _, relaxed = attention_fusion_loss(out, labels, alpha=0.0, beta=0.0)
    _, coded = attention_fusion_loss(out, labels, alpha=0.0, beta=0.0, code_pairs=True)
    assert relaxed["contrastive"] > 0.1
    assert coded["contrastive"] == pytest.approx(0.0, abs=1e-9)


def test_opt_in_terms_add_their_weighted_parts() -> None:
    torch.manual_seed(0)
    f = torch.randn(6, 8, dtype=torch.float64)
    labels = (torch.rand(6, 3) < 0.5).double()
    out = HashOutput(hash=f, logits=torch.randn(6, 3, dtype=torch.float64), features=f)
    base, _ = attention_fusion_loss(out, labels)
    total, parts = attention_fusion_loss(out, labels, balance=0.3, decorrelation=2.0)
    extra = 0.3 * bit_balance_loss(f) + 2.0 * bit_decorrelation_loss(f)
    assert total.item() == pytest.approx((base + extra).item(), rel=1e-12)
    assert parts["balance"] == pytest.approx(bit_balance_loss(f).item())
    assert parts["decorrelation"] == pytest.approx(bit_decorrelation_loss(f).item())


def test_classify_codes_feeds_the_classifier_the_binary_code() -> None:
    torch.manual_seed(0)
    head = HashHead(5, 6, 3, classify_codes=True)
    x = torch.randn(4, 5, requires_grad=True)
    f, logits = head(x)
    expected = head.classifier(torch.where(f >= 0, 1.0, -1.0))
    assert torch.allclose(logits, expected)
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # the gradient passes through sign
    plain = HashHead(5, 6, 3)
    plain.load_state_dict(head.state_dict())
    assert torch.allclose(plain(x)[1], plain.classifier(plain(x)[0]))


def test_double_margin_pull_leaves_similar_pairs_within_the_pull_margin_alone() -> None:
    sim = torch.ones(2, 2)
    near = torch.tensor([[0.0, 0.0], [1.0, 0.0]])  # D = 1
    far = torch.tensor([[0.0, 0.0], [3.0, 0.0]])  # D = 3
    assert contrastive_loss(near, sim, 4.0, pull_margin=2.0).item() == pytest.approx(0.0, abs=1e-9)
    assert contrastive_loss(far, sim, 4.0, pull_margin=2.0).item() == pytest.approx(0.5 * 1.0**2)
    assert contrastive_loss(far, sim, 4.0).item() == pytest.approx(0.5 * 3.0**2)


def _af_loss(params: dict[str, float], context=None):
    from cxrhash.config import TrainConfig
    from cxrhash.methods.attention_fusion import ATTENTION_FUSION

    torch.manual_seed(0)
    f = torch.randn(6, 16, dtype=torch.float64)
    out = HashOutput(hash=f, logits=torch.randn(6, 3, dtype=torch.float64), features=f)
    labels = (torch.rand(6, 3) < 0.5).double()
    config = TrainConfig(method="attention-fusion", bits=16, method_params={"paper": 1, **params})
    return ATTENTION_FUSION.loss(out, labels, config, context), f, labels


def test_margin_scale_sets_the_margin_from_the_output_width() -> None:
    (_, parts), f, labels = _af_loss({"margin_scale": 2.0})
    from cxrhash.losses import pair_similarity

    expected = contrastive_loss(f, pair_similarity(labels), math.sqrt(2 * 16))
    assert parts["contrastive"] == pytest.approx(expected.item())


def test_default_recipe_departs_from_the_paper_only_where_documented() -> None:
    from cxrhash.config import TrainConfig
    from cxrhash.methods.attention_fusion import ATTENTION_FUSION, PAPER_PARAMS, recipe

    default = recipe(TrainConfig(method="attention-fusion", optimizer="adam"))
    paper = recipe(TrainConfig(method="attention-fusion", method_params={"paper": 1}))
    assert {k for k in default if default[k] != paper[k]} == set(PAPER_PARAMS) | {"paper"}
    assert paper["margin_scale"] == 1.0 and paper["ramp_epochs"] == 0.0
    # an explicit parameter wins over the paper switch
    mixed = TrainConfig(method="attention-fusion", method_params={"paper": 1, "balance": 0.3})
    assert recipe(mixed)["balance"] == 0.3 and recipe(mixed)["pull_bits"] == 0.0
    assert set(PAPER_PARAMS) <= set(ATTENTION_FUSION.defaults)


def test_ramp_weighs_the_code_terms_by_training_progress() -> None:
    from cxrhash.methods.base import EpochInfo, LossContext

    (_, full), _, _ = _af_loss({})
    for epoch, step, weight in [(0, 0, 0.0), (0, 5, 0.25), (1, 0, 0.5), (3, 7, 1.0)]:
        context = LossContext(torch.arange(6), None, EpochInfo(epoch, 12, 10), step)
        (total, parts), _, _ = _af_loss({"ramp_epochs": 2.0}, context)
        code = full["contrastive"] + 0.5 * full["quantization"]
        assert total.item() == pytest.approx(weight * code + 0.5 * full["bce"]), (epoch, step)


def test_delay_trains_the_bce_alone_before_the_ramp_starts() -> None:
    from cxrhash.methods.attention_fusion import code_weight
    from cxrhash.methods.base import EpochInfo, LossContext

    def at(epoch: int, step: int) -> LossContext:
        return LossContext(torch.arange(6), None, EpochInfo(epoch, 12, 10), step)

    for epoch, step, weight in [(0, 5, 0.0), (1, 0, 0.0), (1, 5, 0.25), (2, 0, 0.5), (3, 0, 1.0)]:
        assert code_weight(at(epoch, step), 2.0, 1.0) == pytest.approx(weight), (epoch, step)
    # without a ramp the code terms switch on at once after the delay
    assert code_weight(at(0, 9), 0.0, 1.0) == 0.0 and code_weight(at(1, 0), 0.0, 1.0) == 1.0
    # the schedule is in epochs whatever the run's length (a resumed run may raise it)
    for total in (4, 12, 50):
        short = LossContext(torch.arange(6), None, EpochInfo(1, total, 30), 15)
        assert code_weight(short, 2.0, 1.0) == pytest.approx(0.25)
    # outside training (no epoch) the loss is the full one
    assert code_weight(LossContext(torch.arange(6), None, None, 0), 2.0, 1.0) == 1.0
    # the loss itself: BCE alone inside the delay
    (total, parts), _, _ = _af_loss({"delay_epochs": 1.0}, at(0, 3))
    assert total.item() == pytest.approx(0.5 * parts["bce"])


def test_default_delay_applies_to_every_optimiser_unless_given() -> None:
    from cxrhash.config import TrainConfig
    from cxrhash.methods.attention_fusion import recipe

    def delay(optimizer: str, **params: float) -> float:
        config = TrainConfig(method="attention-fusion", optimizer=optimizer, method_params=params)
        return recipe(config)["delay_epochs"]

    assert delay("adam") == 2.0 and delay("sgd") == 2.0
    assert delay("sgd", delay_epochs=1.0) == 1.0 and delay("adam", delay_epochs=0.0) == 0.0
    assert delay("adam", paper=1.0) == 0.0


def test_geometry_is_zero_when_code_cosines_match_the_centred_embedding() -> None:
    torch.manual_seed(0)
    feats = torch.rand(16, 32) + 5.0  # ReLU-like: all positive, so centring matters
    centred = feats - feats.mean(dim=0, keepdim=True)
    rotation, _ = torch.linalg.qr(torch.randn(32, 32))
    assert feature_geometry_loss(3.0 * centred @ rotation, feats).item() == pytest.approx(
        0.0, abs=1e-5
    )
    # uncentred features have cosines near 1 everywhere: codes copying them are wrong
    assert feature_geometry_loss(feats @ rotation, feats).item() > 0.1


def test_geometry_counts_squared_hamming_error_per_bit_and_leaves_features_alone() -> None:
    # two ±1 codes h bits apart have cos 1 − 2h/k; centred features of two films are antipodal
    k, h = 16, 4
    u = torch.ones(2, k)
    u[1, :h] = -1.0
    u.requires_grad_(True)
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss = feature_geometry_loss(u, feats)
    # target cos −1, code cos 1 − 2h/k: error in cos 2 − 2h/k; (k/4)·error² = (k − h)²/k
    assert loss.item() == pytest.approx((k - h) ** 2 / k)
    loss.backward()
    assert feats.grad is None
    assert u.grad is not None and u.grad.abs().sum() > 0
