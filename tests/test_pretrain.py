"""C2L pretraining: loss, momentum encoder, queue, data, resume, export, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import shared_data
from PIL import Image
from torch import Tensor
from typer.testing import CliRunner

from cxrhash.cli import app
from cxrhash.data.dataset import DataFormatError, SkippedSample
from cxrhash.models.backbones import BACKBONES, create_backbone, load_backbone_weights
from cxrhash.pretrain import PRETRAIN_METHODS, C2LConfig, PretrainError, pretrain_c2l
from cxrhash.pretrain.c2l import C2LModel, C2LTask, c2l_loss, info_nce, mixup_targets
from cxrhash.pretrain.unlabeled import UnlabeledImages, list_images

TINY = {"image_size": 32, "epochs": 1, "batch_size": 8, "queue": 16, "dim": 8}


def _write_pngs(folder: Path, n: int, size: int = 40, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        yy, xx = np.mgrid[:size, :size]
        blob = np.exp(-((yy - rng.uniform(8, 32)) ** 2 + (xx - rng.uniform(8, 32)) ** 2) / 60)
        pixels = (255 * np.clip(0.3 * rng.random((size, size)) + 0.7 * blob, 0, 1)).astype(np.uint8)
        paths.append(sub / f"img{i:02d}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def png_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 readable PNGs in two subfolders, one corrupt PNG and a text file."""
    root = tmp_path_factory.mktemp("unlabeled")
    _write_pngs(root, 12)
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (root / "notes.txt").write_text("not an image")
    return root


# ---- loss ---------------------------------------------------------------------------------


def _unit(rows: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=gen, dtype=torch.float64), dim=1)


def _neg_log_softmax(q: list[float], cands: list[list[float]], target: int, tau: float) -> float:
    scores = [sum(a * b for a, b in zip(q, c, strict=True)) / tau for c in cands]
    return -(scores[target] - math.log(sum(math.exp(s) for s in scores)))


def test_c2l_loss_matches_direct_recomputation() -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, q_mix, queue = _unit(3, 4, gen), _unit(3, 4, gen), _unit(3, 4, gen), _unit(2, 4, gen)
    perm, lam, tau = torch.tensor([2, 0, 1]), 0.7, 0.5
    parts = c2l_loss(q, k, queue, q_mix=q_mix, perm=perm, lam=lam, temperature=tau)

    keys, negs = k.tolist(), queue.tolist()
    k_mix = [
        [
            lam * a + (1 - lam) * b
            for a, b in zip(k[i].tolist(), k[int(perm[i])].tolist(), strict=True)
        ]
        for i in range(3)
    ]
    k_mix = [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in k_mix]
    moco = image = feature = 0.0
    for a in range(3):
        moco += _neg_log_softmax(q[a].tolist(), keys + negs, a, tau) / 3
        qm = q_mix[a].tolist()
        image += lam * _neg_log_softmax(qm, keys + negs, a, tau) / 3
        image += (1 - lam) * _neg_log_softmax(qm, keys + negs, int(perm[a]), tau) / 3
        feature += _neg_log_softmax(qm, k_mix + negs, a, tau) / 3
    assert parts["moco"].item() == pytest.approx(moco, rel=1e-10)
    assert parts["image_mixup"].item() == pytest.approx(image, rel=1e-10)
    assert parts["feature_mixup"].item() == pytest.approx(feature, rel=1e-10)
    assert parts["total"].item() == pytest.approx(moco + image + feature, rel=1e-10)
    no_feature = c2l_loss(
        q, k, queue, q_mix=q_mix, perm=perm, lam=lam, temperature=tau, feature_mixup=False
    )
    assert set(no_feature) == {"moco", "image_mixup", "total"}


def test_image_mixup_with_lambda_one_is_plain_info_nce() -> None:
    gen = torch.Generator().manual_seed(1)
    q, k, queue = _unit(5, 6, gen), _unit(5, 6, gen), _unit(7, 6, gen)
    perm = torch.tensor([1, 2, 3, 4, 0])
    parts = c2l_loss(q, k, queue, q_mix=q, perm=perm, lam=1.0, temperature=0.2)
    plain = info_nce(q, k, queue, 0.2)
    assert parts["image_mixup"].item() == pytest.approx(plain.item(), rel=1e-12)
    assert parts["moco"].item() == pytest.approx(plain.item(), rel=1e-12)
    # λ < 1 moves target mass to the partner key and so changes the term.
    mixed = c2l_loss(q, k, queue, q_mix=q, perm=perm, lam=0.6, temperature=0.2)
    assert abs(mixed["image_mixup"].item() - plain.item()) > 1e-3


def test_mixup_targets_rows_sum_to_one_with_fixed_points() -> None:
    targets = mixup_targets(torch.tensor([1, 0, 2]), 0.8)
    expected = torch.tensor([[0.8, 0.2, 0.0], [0.2, 0.8, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(targets, expected)


# ---- momentum encoder and queue ---------------------------------------------------------------


def test_training_step_updates_key_encoder_by_momentum_and_enqueues_keys(png_dir: Path) -> None:
    torch.manual_seed(0)
    # one BN batch, so the enqueued keys can be recomputed here (grouping: tests below)
    config = C2LConfig(
        backbone="test-cnn", momentum=0.9, lr=0.5, queue=5, dim=8, image_size=32, bn_groups=1
    )
    model = C2LModel("test-cnn", dim=8, queue=5).train()
    for p_k, p_q in zip(model.encoder_k.parameters(), model.encoder_q.parameters(), strict=True):
        assert torch.equal(p_k, p_q)  # the key encoder starts as a copy
    optimizer = torch.optim.SGD(model.encoder_q.parameters(), lr=config.lr)
    view_q, view_k = torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32)
    k_before = [p.detach().clone() for p in model.encoder_k.parameters()]
    q_before = [p.detach().clone() for p in model.encoder_q.parameters()]
    with torch.no_grad():
        expected_keys = model.encoder_k(view_k)
    # One engine step: the task's loss, an optimiser step, then the task's after-step hook.
    task = C2LTask(config, UnlabeledImages(png_dir, 32))
    batch = {"query": view_q, "key": view_k, "idx": torch.arange(4), "skipped": []}
    out = task.training_step(model, batch, torch.device("cpu"))
    assert out is not None and out.n_images == 4
    optimizer.zero_grad()
    out.loss.backward()
    optimizer.step()
    task.after_step(model)

    moved = 0
    for old_k, old_q, p_k, p_q in zip(
        k_before, q_before, model.encoder_k.parameters(), model.encoder_q.parameters(), strict=True
    ):
        assert torch.allclose(p_k, 0.9 * old_k + 0.1 * p_q.detach(), atol=1e-6)
        moved += int(not torch.equal(old_q, p_q))
    assert moved > 0  # the query encoder did train, so the check above is not vacuous
    assert int(model.queue_ptr) == 4
    assert torch.allclose(model.queue[:4], expected_keys, atol=1e-6)


class _BatchMean(torch.nn.Module):
    """A stand-in encoder made only of what batch normalisation leaks: every output is the
    mean of the sub-batch it was computed in."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1).mean(dim=0, keepdim=True).expand(len(x), -1)


def test_grouped_forward_is_per_group_and_restores_the_order() -> None:
    from cxrhash.pretrain.c2l import grouped_forward

    x = torch.arange(8.0).reshape(8, 1)
    assert torch.equal(grouped_forward(_BatchMean(), x, 1), torch.full((8, 1), 3.5))
    assert grouped_forward(_BatchMean(), x, 2).flatten().tolist() == [1.5] * 4 + [5.5] * 4
    order = torch.tensor([7, 0, 6, 1, 5, 2, 4, 3])  # groups {7, 0, 6, 1} and {5, 2, 4, 3}
    out = grouped_forward(_BatchMean(), x, 2, order).flatten()
    assert out.tolist() == [3.5] * 8  # each group mean, written back to its own rows
    ident = torch.nn.Identity()
    assert torch.equal(grouped_forward(ident, x, 4, order), x)  # order restored
    # a short batch never leaves a group of one image
    assert grouped_forward(_BatchMean(), x[:3], 4).flatten().tolist() == [1.0] * 3
    assert grouped_forward(_BatchMean(), x[:5], 4).flatten().tolist() == [1.0] * 3 + [3.5] * 2


def test_shuffled_bn_removes_the_batch_signature_shared_by_query_and_key() -> None:
    """With one BN batch the query and the key of an image carry the same batch statistics;
    normalised over shuffled groups, an image's key no longer matches its query's group."""
    from cxrhash.pretrain.c2l import grouped_forward

    torch.manual_seed(0)
    x = torch.randn(16, 3)
    order = torch.randperm(16)
    q = grouped_forward(_BatchMean(), x, 4)
    k_shared = grouped_forward(_BatchMean(), x + 0.01, 4)  # unshuffled: same groups as q
    k_shuffled = grouped_forward(_BatchMean(), x + 0.01, 4, order)
    d_shared = (q - k_shared).norm(dim=1)
    d_shuffled = (q - k_shuffled).norm(dim=1)
    assert d_shared.max() < 0.02  # the leak: every key sits on its query's group mean
    assert d_shuffled.mean() > 10 * d_shared.mean()


def test_instance_top1_finds_own_keys_and_misses_shifted_ones() -> None:
    from cxrhash.pretrain.c2l import instance_top1

    torch.manual_seed(0)
    model = C2LModel("test-cnn", dim=8, queue=4).train()
    views = torch.rand(6, 1, 32, 32)
    assert instance_top1(model, (views, views)) == 1.0  # key encoder = query encoder at init
    assert instance_top1(model, (views, views.roll(1, dims=0))) == 0.0
    assert model.training  # the mode is restored


def test_augment_strength_zero_leaves_only_flips(png_dir: Path) -> None:
    from cxrhash.pretrain.unlabeled import min_crop_scale

    assert min_crop_scale(1.0) == 0.5 and min_crop_scale(0.5) == 0.75 and min_crop_scale(0) == 1
    torch.manual_seed(0)
    plain = UnlabeledImages(png_dir, 32, augment_strength=0.0)
    item = plain[0]
    assert isinstance(item, dict)
    # both views are the whole image, maybe mirrored: equal up to a flip
    q, k = item["query"], item["key"]
    assert torch.allclose(q, k, atol=1e-6) or torch.allclose(q, k.flip(-1), atol=1e-6)
    strong = UnlabeledImages(png_dir, 32)
    views = [strong[0] for _ in range(4)]
    assert not any(
        torch.allclose(v["query"], v["key"], atol=1e-3)
        or torch.allclose(v["query"], v["key"].flip(-1), atol=1e-3)
        for v in views
        if isinstance(v, dict)
    )
    with pytest.raises(PretrainError, match="augment_strength"):
        C2LConfig(augment_strength=1.5)


def test_queue_pointer_wraps_around() -> None:
    model = C2LModel("test-cnn", dim=3, queue=5)
    first = F.normalize(torch.randn(4, 3), dim=1)
    second = F.normalize(torch.randn(4, 3), dim=1)
    model.enqueue(first)
    old_row4 = model.queue[4].clone()
    model.enqueue(second)
    assert int(model.queue_ptr) == 3
    assert torch.equal(model.queue[4], second[0]) and not torch.equal(old_row4, second[0])
    assert torch.equal(model.queue[:3], second[1:])
    assert torch.equal(model.queue[3], first[3])
    big = F.normalize(torch.randn(7, 3), dim=1)
    model.enqueue(big)  # larger than the queue: only the newest 5 stay
    assert int(model.queue_ptr) == 3
    assert torch.equal(model.queue[[3, 4, 0, 1, 2]], big[2:])


# ---- data ----------------------------------------------------------------------------------


def test_dataset_skips_corrupt_png_and_reads_manifest(png_dir: Path, tmp_path: Path) -> None:
    data = UnlabeledImages(png_dir, 24)
    assert len(data) == 13  # 12 good + 1 corrupt, the .txt is ignored, subfolders searched
    items = [data[i] for i in range(len(data))]
    bad = [item for item in items if isinstance(item, SkippedSample)]
    assert [Path(b.path).name for b in bad] == ["bad.png"]
    good = next(item for item in items if isinstance(item, dict))
    assert good["query"].shape == good["key"].shape == (1, 24, 24)
    assert not torch.equal(good["query"], good["key"])  # two independent random views
    assert 0.0 <= float(good["query"].min()) and float(good["query"].max()) <= 1.0

    _write_pngs(tmp_path / "images", 3)
    (tmp_path / "manifest.csv").write_text(
        "file,label\nimages/b/img00.png,x\nimages/a/img01.png,\n"
    )
    assert [p.name for p in list_images(tmp_path)] == ["img00.png", "img01.png"]
    (tmp_path / "manifest.csv").write_text("path,label\nimages/b/img00.png,x\n")
    with pytest.raises(DataFormatError, match="'file' column"):
        list_images(tmp_path)


def test_any_decoding_failure_of_one_unlabelled_film_is_a_skip(
    png_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only ImageReadError: a resampler's ValueError or a MemoryError on one film."""
    import cxrhash.data.images as images

    def resize(img: np.ndarray, size: int) -> np.ndarray:
        raise ValueError("cannot reshape array of size 0")

    monkeypatch.setattr(images, "resize_square", resize)
    data = UnlabeledImages(png_dir, 24)
    item = data[0]
    assert isinstance(item, SkippedSample)
    assert item.reason == "cannot decode (ValueError: cannot reshape array of size 0)"


def test_training_proceeds_past_a_corrupt_png(png_dir: Path, tmp_path: Path) -> None:
    config = C2LConfig(backbone="test-cnn", **{**TINY, "batch_size": 4})
    summary = pretrain_c2l(config, png_dir, tmp_path / "run", progress=False)
    assert summary["skipped_files"] == 1 and summary["images"] == 13
    assert (tmp_path / "run" / "backbone.pt").is_file()
    assert (tmp_path / "run" / "pretrain_curves.png").is_file()
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 1 and math.isfinite(history[0]["loss_total"])
    assert {"loss_moco", "loss_image_mixup", "loss_feature_mixup"} <= set(history[0])


# ---- export into create_backbone ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["test-cnn", "resnet18"])
def test_backbone_pt_loads_all_tensors_into_create_backbone(
    name: str, phantom_dir: Path, tmp_path: Path
) -> None:
    config = C2LConfig(backbone=name, max_images=32, **{**TINY, "batch_size": 16})
    pretrain_c2l(config, phantom_dir, tmp_path, progress=False)
    payload = torch.load(tmp_path / "backbone.pt", weights_only=True)
    assert payload["arch"] == name and payload["method"] == "c2l"
    if name == "resnet18":
        assert (
            "conv1.weight" in payload["state_dict"]
            and "layer4.1.bn2.weight" in payload["state_dict"]
        )

    recipe = BACKBONES.get(name)
    full = recipe.build()
    n_backbone = sum(1 for k in full.state_dict() if not k.startswith(recipe.head_prefixes))
    assert load_backbone_weights(full, tmp_path / "backbone.pt", recipe) == n_backbone

    trained = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    prefix = "encoder_q.backbone."
    loaded = create_backbone(name, feature_stage=4, weights=tmp_path / "backbone.pt")
    torch.manual_seed(123)
    fresh = create_backbone(name, feature_stage=4).module.state_dict()
    n_differ = 0
    for key, value in loaded.module.state_dict().items():
        assert torch.equal(value, trained[prefix + key]), key
        n_differ += int(not torch.equal(value, fresh[key]))
    assert n_differ > len(fresh) // 2  # the weights are the trained ones, not a new init


# ---- resume ----------------------------------------------------------------------------------


def test_resume_after_one_epoch_is_bit_identical(phantom_dir: Path, tmp_path: Path) -> None:
    config = C2LConfig(backbone="test-cnn", max_images=24, **{**TINY, "epochs": 2})
    pretrain_c2l(config, phantom_dir, tmp_path / "full", progress=False)

    half = C2LConfig(backbone="test-cnn", max_images=24, **TINY)
    pretrain_c2l(half, phantom_dir, tmp_path / "split", progress=False)
    after_one = torch.load(tmp_path / "split" / "backbone.pt", weights_only=True)["state_dict"]
    with pytest.raises(PretrainError, match="--resume"):
        pretrain_c2l(config, phantom_dir, tmp_path / "split", progress=False)
    changed = C2LConfig(backbone="test-cnn", max_images=24, **{**TINY, "epochs": 2, "lr": 0.1})
    with pytest.raises(PretrainError, match="lr"):
        pretrain_c2l(changed, phantom_dir, tmp_path / "split", resume=True, progress=False)
    summary = pretrain_c2l(config, phantom_dir, tmp_path / "split", resume=True, progress=False)
    assert summary["epochs_run"] == 1

    a = torch.load(tmp_path / "full" / "backbone.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "split" / "backbone.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], after_one[k]) for k in a)  # epoch 2 did change weights
    state_a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    state_b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)  # key encoder and queue too
    history = json.loads((tmp_path / "split" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[1]["lr"] == pytest.approx(0.5 * config.lr)  # cosine halfway over 2 epochs


def test_resume_without_checkpoint_and_bad_config_fail(tmp_path: Path, png_dir: Path) -> None:
    with pytest.raises(PretrainError, match="nothing to resume"):
        pretrain_c2l(C2LConfig(backbone="test-cnn", **TINY), png_dir, tmp_path, resume=True)
    with pytest.raises(PretrainError, match="batch_size"):
        C2LConfig(batch_size=1)
    with pytest.raises(PretrainError, match="unknown backbone"):
        C2LConfig(backbone="vgg")


# ---- CLI -----------------------------------------------------------------------------------


def test_cli_pretrain_help_and_tiny_run(png_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["pretrain", "--help"])
    assert res.exit_code == 0
    assert "backbone-weights" in res.output and "backbone.pt" in res.output
    assert "c2l" in PRETRAIN_METHODS

    out = tmp_path / "run"
    args = ["pretrain", "--data", str(png_dir), "--out", str(out), "--backbone", "test-cnn"]
    args += ["--image-size", "32", "--batch-size", "4", "--queue", "16", "--quiet"]
    res = runner.invoke(app, [*args, "--epochs", "1"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert (out / "backbone.pt").is_file()
    assert "skipped 1" in res.output
    create_backbone("test-cnn", weights=out / "backbone.pt")

    res = runner.invoke(app, ["pretrain", "--data", str(png_dir), "--out", str(out), "--resume"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "for 0 epochs" in res.output  # the saved config's epoch budget is already spent
    res = runner.invoke(
        app, ["pretrain", "--data", str(png_dir), "--out", str(out), "--resume", "--epochs", "2"]
    )
    assert res.exit_code == 0, (res.output, res.exception)
    assert len(json.loads((out / "history.json").read_text())) == 2

    res = runner.invoke(app, [*args, "--method", "simclr"])
    assert res.exit_code == 2 and "unknown pretraining method" in res.output


# ---- real data -------------------------------------------------------------------------------


@pytest.mark.realdata
def test_one_tiny_epoch_on_real_unlabelled_films(tmp_path: Path) -> None:
    root = shared_data("cxr-unlabeled")
    config = C2LConfig(
        backbone="resnet18", image_size=32, epochs=1, batch_size=32, queue=64, max_images=64
    )
    summary = pretrain_c2l(config, root, tmp_path, progress=False)
    assert summary["images"] == 64 and summary["skipped_files"] == 0
    assert math.isfinite(summary["final_loss"])
    spec = create_backbone("resnet18", weights=tmp_path / "backbone.pt")
    assert spec.out_channels == 256  # default stage 3 cut of the pretrained network


# ---- k-NN probe ------------------------------------------------------------------------------


def test_knn_balanced_accuracy_scores_each_class_equally() -> None:
    from cxrhash.pretrain.probe import knn_balanced_accuracy

    a, b = [1.0, 0.0], [0.0, 1.0]
    near_a = F.normalize(torch.tensor([0.95, 0.05]), dim=0).tolist()
    # five class-0 items around a, one class-1 item among them, two class-1 items at b
    feats = F.normalize(torch.tensor([a, a, a, a, a, near_a, b, b]), dim=1)
    labels = [0, 0, 0, 0, 0, 1, 1, 1]
    # k = 1: the stray class-1 item's nearest other item is class 0; the two at b find each other
    assert knn_balanced_accuracy(feats, labels, 1) == pytest.approx((1.0 + 2 / 3) / 2)
    # k = 3: the items at b see one another and the stray item; class 1 still wins there
    assert knn_balanced_accuracy(feats, labels, 3) == pytest.approx((1.0 + 2 / 3) / 2)
    # perfectly separated classes score 1 whatever their sizes
    feats = F.normalize(torch.tensor([a, a, a, a, a, b, b]), dim=1)
    assert knn_balanced_accuracy(feats, [0] * 5 + [1] * 2, 1) == 1.0
    with pytest.raises(ValueError):
        knn_balanced_accuracy(feats[:1], [0], 1)


def _labelled_dir(root: Path) -> Path:
    paths = _write_pngs(root, 12)
    rows = ["file,label"] + [f"{p.relative_to(root).as_posix()},{p.parent.name}" for p in paths]
    rows.append("a/missing.png,a")  # listed but absent: skipped by training and probe alike
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def test_manifest_labels_reads_the_label_column(tmp_path: Path, png_dir: Path) -> None:
    from cxrhash.pretrain.probe import manifest_labels

    root = _labelled_dir(tmp_path / "labelled")
    labels = manifest_labels(root)
    assert labels[root / "a" / "img01.png"] == "a" and labels[root / "b" / "img00.png"] == "b"
    assert len(labels) == 13
    assert manifest_labels(png_dir) == {}  # no manifest at all
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "manifest.csv").write_text("file\nx.png\n")
    assert manifest_labels(tmp_path / "plain") == {}  # no label column


def test_probe_leaves_out_rare_classes_and_scores_thumbnails(tmp_path: Path) -> None:
    """A class of one image would cap balanced accuracy below 1 whatever the network (the
    2,000-film subset of cxr-unlabeled had one 'No Finding' film); the thumbnail reference
    separates classes that differ in layout and not classes of the same noise."""
    from cxrhash.pretrain.probe import MIN_CLASS_IMAGES, KnnProbe

    rng = np.random.default_rng(0)
    files, labels = [], []
    for label, rows, n in (("top", slice(0, 16), 12), ("bottom", slice(16, 32), 12),
                           ("rare", slice(8, 24), 1)):  # fmt: skip
        for i in range(n):
            path = tmp_path / f"{label}{i}.png"
            layout = np.full((32, 32), 0.2)
            layout[rows] = 0.8
            pixels = np.clip(layout + 0.1 * rng.standard_normal((32, 32)), 0, 1)
            Image.fromarray((255 * pixels).astype(np.uint8)).save(path)
            files.append(path)
            labels.append(label)
    probe = KnnProbe(files, labels, 32, k=3)
    assert 1 < MIN_CLASS_IMAGES and probe.class_names == ["bottom", "top"]
    assert len(probe.labels) == 24 and probe.images is not None and len(probe.images) == 24
    assert probe.chance == 0.5
    assert probe.pixel_score() == 1.0
    # the same two classes drawn from one distribution: the thumbnails tell them apart no better
    # than chance (within the spread of 24 leave-one-out guesses)
    mixed = KnnProbe(files[:24], [("x", "y")[i % 2] for i in range(24)], 32, k=3)
    assert mixed.pixel_score() < 0.75


def test_pretraining_records_the_probe_and_keeps_it_across_resume(tmp_path: Path) -> None:
    root = _labelled_dir(tmp_path / "labelled")
    config = C2LConfig(backbone="test-cnn", **{**TINY, "epochs": 2, "batch_size": 4})
    full = pretrain_c2l(config, root, tmp_path / "full", progress=False)
    assert full["knn_probe_chance"] == 0.5
    assert 0.0 <= full["knn_probe_pixels"] <= 1.0
    assert 0.0 <= full["pretext_top1"] <= 1.0 and full["pretext_top1_chance"] == 1 / 12
    assert 0.0 <= full["knn_probe"] <= 1.0 and 0.0 <= full["knn_probe_init"] <= 1.0
    history = json.loads((tmp_path / "full" / "history.json").read_text())
    assert [h["knn_probe_init"] for h in history] == [full["knn_probe_init"]] * 2

    pretrain_c2l(C2LConfig(backbone="test-cnn", **{**TINY, "batch_size": 4}), root,
                 tmp_path / "split", progress=False)  # fmt: skip
    split = pretrain_c2l(config, root, tmp_path / "split", resume=True, progress=False)
    assert split["knn_probe_init"] == full["knn_probe_init"]  # saved, not recomputed
    assert split["knn_probe"] == pytest.approx(full["knn_probe"])  # same weights, same score

    off = pretrain_c2l(
        C2LConfig(backbone="test-cnn", probe_images=0, **TINY), root, tmp_path / "off",
        progress=False,
    )  # fmt: skip
    assert off["knn_probe"] is None
    with pytest.raises(PretrainError, match="probe_images"):
        C2LConfig(probe_images=-1)


def test_cli_pretrain_sets_momentum_and_prints_the_probe(tmp_path: Path) -> None:
    root = _labelled_dir(tmp_path / "labelled")
    out = tmp_path / "run"
    args = ["pretrain", "--data", str(root), "--out", str(out), "--backbone", "test-cnn"]
    args += ["--image-size", "32", "--batch-size", "4", "--queue", "16", "--epochs", "1"]
    args += ["--bn-groups", "2", "--augment-strength", "0.5"]
    res = CliRunner().invoke(app, [*args, "--momentum", "0.99", "--temperature", "0.1", "-q"])
    assert res.exit_code == 0, (res.output, res.exception)
    saved = json.loads((out / "config.json").read_text())
    assert saved["momentum"] == 0.99 and saved["temperature"] == 0.1
    assert saved["bn_groups"] == 2 and saved["augment_strength"] == 0.5
    assert "k-NN probe" in res.output and "chance 0.500" in res.output
    assert "thumbnails" in res.output and "pretext check" in res.output
