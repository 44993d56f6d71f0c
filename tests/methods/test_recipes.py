"""Every registered method's loss equals its published recipe, re-computed here by loops.

The references below are written from SPEC.md and the "choices" table of
docs/design.md (margins, weights, reductions, Ω scales) with explicit Python
loops over samples, pairs and triplets; they call none of the package's loss
functions. Each method is checked with its default parameters and with one
``--param`` override, and its ``parts`` dict must hold the same unweighted
terms whose weighted sum is the total.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from cxrhash.config import TrainConfig
from cxrhash.methods import METHODS
from cxrhash.methods.base import LossContext
from cxrhash.methods.code_bank import CodeBank
from cxrhash.models.output import HashOutput

B, K, C, D = 7, 8, 4, 5
NAN = float("nan")
# Fixed multi-label batch: shared-label counts 0, 1 and 2 all occur; row 4 has no
# positive finding; NaN (unknown) counts as absent.
LABELS = [
    [1, 0, 0, 1],
    [1, 1, 0, 0],
    [0, 0, 1, NAN],
    [1, 0, 0, 1],
    [0, 0, NAN, 0],
    [0, 1, 1, 0],
    [1, NAN, 0, 1],
]

Batch = dict[str, list[list[float]]]
Terms = dict[str, float]
Reference = Callable[[Batch, dict[str, float]], tuple[float, Terms]]


def _batch() -> tuple[HashOutput, torch.Tensor, Batch]:
    """A seeded batch as the model would return it, and the same numbers as Python lists."""
    g = torch.Generator().manual_seed(7)
    out = HashOutput(
        hash=1.6 * torch.rand(B, K, generator=g, dtype=torch.float64) - 0.8,
        logits=torch.randn(B, C, generator=g, dtype=torch.float64),
        features=torch.randn(B, D, generator=g, dtype=torch.float64),
        aux_logits=torch.randn(B, C, generator=g, dtype=torch.float64),
        hash_weight=0.5 * torch.randn(K, D, generator=g, dtype=torch.float64),
    )
    out.hash[0, 0], out.hash[2, 3] = 1.4, -1.3  # some |u| > 1 for the quantisation terms
    labels = torch.tensor(LABELS, dtype=torch.float64)
    lists = {
        "u": out.hash.tolist(),
        "logits": out.logits.tolist(),
        "aux": out.aux_logits.tolist(),  # type: ignore[union-attr]
        "w": out.hash_weight.tolist(),  # type: ignore[union-attr]
    }
    return out, labels, lists


# --------------------------------------------------------------------------- shared pieces


def positives(i: int) -> set[int]:
    return {c for c, y in enumerate(LABELS[i]) if y == 1}


def shared(i: int, j: int) -> int:
    """Similarity level r_ij = |Y_i ∩ Y_j|."""
    return len(positives(i) & positives(j))


def similar(i: int, j: int) -> float:
    return 1.0 if shared(i, j) >= 1 else 0.0


def pairs() -> list[tuple[int, int]]:
    return [(i, j) for i in range(B) for j in range(i + 1, B)]


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def sq_dist(a: list[float], b: list[float]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def bce(logits: list[list[float]]) -> float:
    """−Σ_c [y ln ŷ + (1−y) ln(1−ŷ)] over known labels, mean over samples."""
    total = 0.0
    for i in range(B):
        for c in range(C):
            y = LABELS[i][c]
            if math.isnan(y):
                continue
            p = sigmoid(logits[i][c])
            total -= y * math.log(p) + (1 - y) * math.log(1 - p)
    return total / B


def l1_to_one(u: list[list[float]]) -> float:
    """‖ |u| − 1 ‖₁ per sample, mean over samples."""
    return sum(sum(abs(abs(x) - 1) for x in row) for row in u) / B


def sign_gap(u: list[list[float]]) -> float:
    """‖sign(u) − u‖² per sample (sign(0) = +1), mean over samples."""
    return sum(sum(((1.0 if x >= 0 else -1.0) - x) ** 2 for x in row) for row in u) / B


def bit_balance(u: list[list[float]]) -> float:
    """Σ_bits (mean over the batch of the bit)²."""
    return sum((sum(u[i][b] for i in range(B)) / B) ** 2 for b in range(K))


def orthogonality(w: list[list[float]]) -> float:
    """‖W Wᵀ − I‖²_F of the k×D hash-layer weight."""
    return sum(
        (dot(w[a], w[b]) - (1.0 if a == b else 0.0)) ** 2 for a in range(K) for b in range(K)
    )


def nll(omega: float, s: float) -> float:
    """−log p(s | Ω) = log(1 + e^Ω) − s·Ω."""
    return math.log1p(math.exp(omega)) - s * omega


def pair_likelihood(u: list[list[float]], scale: float, balanced: bool) -> float:
    """Mean over pairs of w_ij·(−log p), Ω = scale·⟨u_i,u_j⟩, w = |S|/|S±| when balanced."""
    ps = pairs()
    n_pos = sum(similar(i, j) for i, j in ps)
    n_neg = len(ps) - n_pos
    total = 0.0
    for i, j in ps:
        s = similar(i, j)
        w = (len(ps) / n_pos if s else len(ps) / n_neg) if balanced else 1.0
        total += w * nll(scale * dot(u[i], u[j]), s)
    return total / len(ps)


def squared_contrastive(u: list[list[float]], margin: float) -> float:
    """Mean over pairs of ½·s·D² + ½·(1−s)·max(m − D², 0) (DSH, DRH)."""
    total = 0.0
    for i, j in pairs():
        d2, s = sq_dist(u[i], u[j]), similar(i, j)
        total += 0.5 * s * d2 + 0.5 * (1 - s) * max(margin - d2, 0.0)
    return total / len(pairs())


# --------------------------------------------------------------------------- the recipes


def attention_fusion(x: Batch, p: dict[str, float]) -> tuple[float, Terms]:
    """SPEC §1: L_c + α·L_r + β·L_cb, y = 0 for similar pairs, D = ‖f_i − f_j‖, m = √k."""
    m = p["margin"]
    l_c = 0.0
    for i, j in pairs():
        y = 1 - similar(i, j)
        dist = math.sqrt(sq_dist(x["u"][i], x["u"][j]))
        l_c += 0.5 * (1 - y) * dist**2 + 0.5 * y * max(0.0, m - dist) ** 2
    terms = {"contrastive": l_c / len(pairs()), "quantization": l1_to_one(x["u"])}
    terms["bce"] = bce(x["logits"])
    total = terms["contrastive"] + p["alpha"] * terms["quantization"] + p["beta"] * terms["bce"]
    return total, terms


def osdh(x: Batch, p: dict[str, float]) -> tuple[float, Terms]:
    """SPEC §2: Σ (2^{r_i} − 2^{r_j})/Z·max(0, D_qi − D_qj + ρ), Z = #triplets; + BCE."""
    u = x["u"]

    def hamming(a: int, b: int) -> float:
        return 0.5 * (K - dot(u[a], u[b]))

    total, z = 0.0, 0
    for q in range(B):
        for i in range(B):
            for j in range(B):
                if q in (i, j) or shared(q, i) <= shared(q, j):
                    continue
                z += 1
                weight = 2 ** shared(q, i) - 2 ** shared(q, j)
                total += weight * max(0.0, hamming(q, i) - hamming(q, j) + p["rho"])
    terms = {"ranking": total / z, "bce": bce(x["logits"])}
    return p["lambda_r"] * terms["ranking"] + p["lambda_c"] * terms["bce"], terms


def semantic_attention(x: Batch, p: dict[str, float]) -> tuple[float, Terms]:
    """SPEC §3: balanced pairwise NLL (Ω = ½⟨u_i,u_j⟩) + η·‖sign(u) − u‖² + γ·BCE."""
    terms = {
        "likelihood": pair_likelihood(x["u"], 0.5, balanced=True),
        "quantization": sign_gap(x["u"]),
        "bce": bce(x["logits"]),
    }
    total = terms["likelihood"] + p["eta"] * terms["quantization"] + p["gamma"] * terms["bce"]
    return total, terms


def saliency_fusion(x: Batch, p: dict[str, float]) -> tuple[float, Terms]:
    """SPEC §4: BCE + λ_q‖|u|−1‖₁ + λ_b·Σ(bit mean)² + λ_aux·BCE of the global classifier."""
    terms = {
        "bce": bce(x["logits"]),
        "quantization": l1_to_one(x["u"]),
        "balance": bit_balance(x["u"]),
        "bce_global": bce(x["aux"]),
    }
    total = (
        terms["bce"]
        + p["lambda_q"] * terms["quantization"]
        + p["lambda_b"] * terms["balance"]
        + p["lambda_aux"] * terms["bce_global"]
    )
    return total, terms


def dh(x: Batch, p: dict[str, float]) -> tuple[float, Terms]:
    """Liong 2015: ½‖B − H‖² − (λ₁/2)·variance + (λ₂/2)·‖WWᵀ − I‖²_F (no labels)."""
    u = x["u"]
    mean = [sum(u[i][b] for i in range(B)) / B for b in range(K)]
    variance = sum(sq_dist(u[i], mean) for i in range(B)) / B
    terms = {"quantization": sign_gap(u), "variance": -variance}
    terms["orthogonality"] = orthogonality(x["w"])
    total = (
        0.5 * terms["quantization"]
        + 0.5 * p["lambda_var"] * terms["variance"]
        + 0.5 * p["lambda_orth"] * terms["orthogonality"]
    )
    return total, terms


def dsh(x: Batch, p: dict[str, float]) -> tuple[float, Terms]:
    """Liu 2016: ½sD² + ½(1−s)max(2k − D², 0) + α‖|u| − 1‖₁, α = 0.01."""
    terms = {
        "contrastive": squared_contrastive(x["u"], p["margin_factor"] * K),
        "quantization": l1_to_one(x["u"]),
    }
    return terms["contrastive"] + p["alpha"] * terms["quantization"], terms


def dpsh(x: Batch, p: dict[str, float]) -> tuple[float, Terms]:
    """Li 2016: pairwise NLL with Ω = ½⟨u_i,u_j⟩ + η‖sign(u) − u‖².

    With ``bank`` (the paper) every batch item i is paired with every training
    image j, self included: here the training set is the batch itself, its bank
    rows holding the batch's own codes. Without it, the pairs i < j of the batch.
    """
    u = x["u"]
    if p["bank"] >= 0.5:
        nll = 0.0
        for i in range(B):
            for j in range(B):
                omega = 0.5 * dot(u[i], u[j])
                nll += math.log1p(math.exp(omega)) - similar(i, j) * omega
        likelihood = nll / (B * B)
    else:
        likelihood = pair_likelihood(u, 0.5, balanced=False)
    terms = {"likelihood": likelihood, "quantization": sign_gap(u)}
    return terms["likelihood"] + p["eta"] * terms["quantization"], terms


def hashnet(x: Batch, p: dict[str, float]) -> tuple[float, Terms]:
    """Cao 2017: balanced pairwise NLL with the adaptive Ω = (10/k)⟨h_i,h_j⟩."""
    likelihood = pair_likelihood(x["u"], p["omega_factor"] / K, balanced=True)
    return likelihood, {"likelihood": likelihood}


def drh(x: Batch, p: dict[str, float]) -> tuple[float, Terms]:
    """Conjeti 2017: squared contrastive (m = 2k) + λ_q·Σ log cosh(|u|−1) + λ_b + λ_o terms."""
    u = x["u"]
    terms = {
        "retrieval": squared_contrastive(u, p["margin_factor"] * K),
        "quantization": sum(sum(math.log(math.cosh(abs(v) - 1)) for v in row) for row in u) / B,
        "balance": bit_balance(u),
        "orthogonality": orthogonality(x["w"]),
    }
    total = (
        terms["retrieval"]
        + p["lambda_q"] * terms["quantization"]
        + p["lambda_b"] * terms["balance"]
        + p["lambda_o"] * terms["orthogonality"]
    )
    return total, terms


def ath(x: Batch, p: dict[str, float]) -> tuple[float, Terms]:
    """Fang 2021: mean over (a, p, n) of −log σ(Θ_ap − Θ_an − k/4) + λ_c·BCE + η‖sign(u) − u‖²."""
    u = x["u"]
    margin = p["margin_factor"] * K
    total, n_triplets = 0.0, 0
    for a in range(B):
        for pos in range(B):
            for neg in range(B):
                if pos == a or neg == a or not similar(a, pos) or similar(a, neg):
                    continue
                n_triplets += 1
                theta = 0.5 * dot(u[a], u[pos]) - 0.5 * dot(u[a], u[neg])
                total -= math.log(sigmoid(theta - margin))
    terms = {"triplet": total / n_triplets, "bce": bce(x["logits"]), "quantization": sign_gap(u)}
    weighted = terms["triplet"] + p["lambda_c"] * terms["bce"] + p["eta"] * terms["quantization"]
    return weighted, terms


# name → (reference, published defaults written out here, one --param override)
RECIPES: dict[str, tuple[Reference, dict[str, float], dict[str, float]]] = {
    "osdh": (
        osdh,
        {"lambda_r": 0.1, "lambda_c": 1.0, "rho": 5.0},
        {"rho": 2.0},
    ),
    "semantic-attention": (semantic_attention, {"eta": 0.1, "gamma": 1.0}, {"gamma": 0.3}),
    "saliency-fusion": (
        saliency_fusion,
        {"lambda_q": 0.1, "lambda_b": 0.1, "lambda_aux": 1.0},
        {"lambda_b": 0.5},
    ),
    "dh": (dh, {"lambda_var": 1.0, "lambda_orth": 0.001}, {"lambda_orth": 0.01}),
    "dsh": (dsh, {"alpha": 0.01, "margin_factor": 2.0}, {"margin_factor": 1.0}),
    "dpsh": (dpsh, {"eta": 0.1, "bank": 1.0}, {"eta": 0.5, "bank": 0.0}),
    "hashnet": (hashnet, {"omega_factor": 10.0}, {"omega_factor": 5.0}),
    "drh": (
        drh,
        {"margin_factor": 2.0, "lambda_q": 0.1, "lambda_b": 0.1, "lambda_o": 0.001},
        {"lambda_q": 0.3},
    ),
    "ath": (
        ath,
        {"margin_factor": 0.25, "eta": 0.1, "lambda_c": 1.0},
        {"margin_factor": 0.5, "lambda_c": 0.0},
    ),
}


def _check(name: str, config: TrainConfig, reference: Reference, params: dict[str, float]) -> None:
    out, labels, lists = _batch()
    method = METHODS.get(name)
    if method.uses_bank is not None and method.uses_bank(config):
        bank = CodeBank(labels.numpy(), K)  # the training set = this batch, codes written
        bank.codes = out.hash.detach().clone()
        total, parts = method.loss(out, labels, config, LossContext(torch.arange(B), bank))
    else:
        total, parts = method.loss(out, labels, config)
    expect_total, expect_terms = reference(lists, params)
    assert set(parts) == {*expect_terms, "total"}, name
    for key, value in expect_terms.items():
        assert parts[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, key)
    assert torch.allclose(total, torch.tensor(expect_total, dtype=total.dtype), rtol=1e-9, atol=0)
    assert parts["total"] == pytest.approx(float(total), rel=1e-12)


def test_every_registered_method_has_a_recipe_test() -> None:
    assert sorted([*RECIPES, "attention-fusion"]) == METHODS.names()


@pytest.mark.parametrize("override", [False, True], ids=["defaults", "override"])
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_loss_is_the_published_recipe(name: str, override: bool) -> None:
    reference, published, changed = RECIPES[name]
    config = TrainConfig(method=name)
    params = dict(published)
    if override:
        config.method_params = dict(changed)
        params.update(changed)
    _check(name, config, reference, params)


@pytest.mark.parametrize("override", [False, True], ids=["defaults", "override"])
def test_attention_fusion_loss_is_the_published_recipe(override: bool) -> None:
    """``--param paper=1`` gives SPEC §1's loss exactly (the defaults depart by measurement)."""
    config = TrainConfig(method="attention-fusion", method_params={"paper": 1})
    params = {"alpha": 0.5, "beta": 0.5, "margin": math.sqrt(K)}  # SPEC §1; m = √k
    if override:
        config.alpha, config.beta, config.margin = 0.2, 0.7, 1.5
        params = {"alpha": 0.2, "beta": 0.7, "margin": 1.5}
    _check("attention-fusion", config, attention_fusion, params)


def test_the_fixed_batch_exercises_every_branch() -> None:
    levels = {shared(i, j) for i, j in pairs()}
    assert levels == {0, 1, 2}  # OSDH's three similarity levels: none, some, all shared
    _, _, lists = _batch()
    values = [v for row in lists["u"] for v in row]
    assert any(abs(v) > 1 for v in values) and any(abs(v) < 1 for v in values)
    assert any(math.isnan(v) for row in LABELS for v in row)


@pytest.mark.parametrize(("flag", "mode"), [(0, "zeros"), (1, "replicate")])
def test_attention_fusion_attention_padding_parameter(flag: int, mode: str) -> None:
    config = TrainConfig(
        method="attention-fusion", backbone="test-cnn", bits=8,
        method_params={"attention_replicate": flag},
    )  # fmt: skip
    model = METHODS.get("attention-fusion").build_model(config, 3)
    assert model.attention.fuse.padding_mode == mode
