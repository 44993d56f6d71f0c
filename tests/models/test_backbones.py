import pytest
import torch
import torchvision

from cxrhash.models.backbones import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneWeightsError,
    create_backbone,
)


@pytest.mark.parametrize("name", ["test-cnn", "resnet18", "resnet50", "densenet121"])
@pytest.mark.parametrize("stage", [3, 4])
def test_output_shape_matches_reported_channels_and_stride(name, stage):
    spec = create_backbone(name, feature_stage=stage)
    with torch.no_grad():
        fmap = spec.module.eval()(torch.rand(2, 1, 64, 64))
    assert spec.stride == {3: 16, 4: 32}[stage]
    assert fmap.shape == (2, spec.out_channels, 64 // spec.stride, 64 // spec.stride)


def test_known_channel_counts():
    assert create_backbone("resnet18").out_channels == 256
    assert create_backbone("resnet50", feature_stage=4).out_channels == 2048
    assert create_backbone("densenet121").out_channels == 1024
    assert {"resnet18", "resnet34", "resnet50", "densenet121", "test-cnn"} <= set(BACKBONES.names())


def test_test_cnn_is_tiny():
    spec = create_backbone("test-cnn", feature_stage=4)
    n_params = sum(p.numel() for p in spec.module.parameters())
    assert 10_000 < n_params < 30_000


def test_grey_input_is_replicated_then_imagenet_normalised():
    spec = create_backbone("test-cnn").module.eval()
    x = torch.rand(2, 1, 32, 32)
    rgb = torch.cat([(x - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)], 1)
    with torch.no_grad():
        torch.testing.assert_close(spec(x), spec.body(rgb))
    with pytest.raises(ValueError, match="B×1×H×W"):
        spec(torch.rand(2, 3, 32, 32))


def test_local_state_dict_is_loaded_with_prefixes_stripped(tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.resnet18()
    saved = {f"module.{k}": v.clone() for k, v in source.state_dict().items()}
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": saved, "epoch": 3}, path)

    spec = create_backbone("resnet18", weights=path)
    body = spec.module.body
    torch.testing.assert_close(body[0].weight, source.conv1.weight)  # conv1
    torch.testing.assert_close(body[6][1].conv2.weight, source.layer3[1].conv2.weight)
    torch.testing.assert_close(body[1].running_var, source.bn1.running_var)
    fresh = create_backbone("resnet18").module.body
    assert not torch.equal(fresh[0].weight, source.conv1.weight)


def test_garbage_file_gives_clear_error(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(BackboneWeightsError, match="garbage.pt"):
        create_backbone("resnet18", weights=path)


def test_wrong_architecture_is_rejected_naming_file_and_keys(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(create_backbone("test-cnn").module.body.state_dict(), path)
    with pytest.raises(BackboneWeightsError, match=r"tiny\.pt matches only 0 of .*conv1\.weight"):
        create_backbone("resnet18", weights=path)


def test_bad_weight_names_and_arguments():
    with pytest.raises(BackboneWeightsError, match="unknown torchvision weights"):
        create_backbone("resnet18", weights="NOT_A_WEIGHT")
    with pytest.raises(BackboneWeightsError, match="neither an existing file"):
        create_backbone("resnet18", weights="/nonexistent/w.pt")
    with pytest.raises(BackboneWeightsError, match="pass a local file"):
        create_backbone("test-cnn", weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="feature_stage"):
        create_backbone("resnet18", feature_stage=2)
    with pytest.raises(KeyError, match="known"):
        create_backbone("vgg-unknown")
