"""A pretrained backbone as the state dict of the full torchvision network, the form
``backbone.pt`` holds and ``--backbone-weights`` loads."""

from __future__ import annotations

from itertools import chain

from torch import Tensor, nn

from cxrhash.models.backbones import BACKBONES, GreyInputAdapter


def torchvision_key_map(name: str) -> dict[str, str]:
    """Map state-dict keys of ``create_backbone(name, feature_stage=4).module`` to the keys of
    the full network (``conv1.weight``, ``layer1.0.bn1.running_mean``, …).

    Found by module identity on a freshly built network cut the same way, so it
    holds for every registered architecture.
    """
    recipe = BACKBONES.get(name)
    full = recipe.build()
    body, _, _ = recipe.cut(full, 4)
    wrapped = GreyInputAdapter(body)
    owner = {id(module): path for path, module in full.named_modules()}
    mapping: dict[str, str] = {}
    for path, module in wrapped.named_modules():
        if id(module) not in owner:
            continue
        tensors = chain(module.named_parameters(recurse=False), module.named_buffers(recurse=False))
        for local, _ in tensors:
            full_path = owner[id(module)]
            mapping[f"{path}.{local}" if path else local] = (
                f"{full_path}.{local}" if full_path else local
            )
    return mapping


def backbone_state_dict(backbone: nn.Module, name: str) -> dict[str, Tensor]:
    """The trained stage-4 backbone as a state dict of the full torchvision network
    (classifier head excluded), ready for :func:`cxrhash.models.backbones.load_backbone_weights`.
    """
    mapping = torchvision_key_map(name)
    state = backbone.state_dict()
    return {mapping[k]: v.detach().cpu().clone() for k, v in state.items() if k in mapping}
