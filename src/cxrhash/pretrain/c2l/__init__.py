"""C2L ("Comparing to Learn", Zhou et al., MICCAI 2020): contrastive pretraining of a backbone.

MoCo-style self-supervision on unlabelled radiographs, plus image and feature
mixup. The output ``backbone.pt`` holds the query backbone in torchvision's own
key names, so ``cxrhash train --backbone-weights OUT/backbone.pt`` starts from it.

Model: query encoder = backbone cut at stage 4 → global average pool → 2-layer
MLP (C → C → ``dim``) → L2 normalisation; key encoder = a momentum copy
(``θ_k ← m·θ_k + (1 − m)·θ_q`` after every optimiser step), never trained by
gradients; a queue of ``K`` past keys supplies negatives.

Shuffled batch normalisation (MoCo's "shuffling BN", emulated on one device): both
encoders normalise over ``bn_groups`` sub-batches, and the key encoder sees the batch in
a random order, so an image's key is normalised with other images than its query. With
one BN batch for all, every query and key of a batch carry that batch's statistics, and
the network lowers the loss by telling the current batch from the queue instead of
telling images apart (measured: ``docs/recipes.md``, "C2L: why it did not learn").

Loss per batch of B images, each seen as a query view ``x`` and a key view
``x'`` (q = query encoder, k = key encoder, τ = temperature; all scores are
dot products of unit vectors divided by τ, and every term is a cross-entropy
over the logits of the B batch keys followed by the K queue entries; queue
entries always have target 0):

* ``moco``: q(x_a) with one-hot target on k(x'_a): InfoNCE whose negatives are
  the other batch keys and the queue.
* ``image_mixup``: x_mix = λ·x_a + (1 − λ)·x_π(a), λ ~ Beta(α, α) (one λ and one
  permutation π per batch); q(x_mix) with soft target λ on k_a and 1 − λ on k_π(a).
  With λ = 1 it equals ``moco``.
* ``feature_mixup``: k_mix,a = normalize(λ·k_a + (1 − λ)·k_π(a)), the same λ, π;
  q(x_mix) with one-hot target on k_mix,a against the other k_mix (mixtures that
  share a component with a's: hard negatives) and the queue. This is C2L's
  "mixed feature" positive for the mixed image.

Total = sum of the terms; ``mixup_alpha = 0`` leaves plain MoCo. After the step
the batch keys k(x') are enqueued (the oldest entries are overwritten).

Parts: ``config`` (:class:`C2LConfig`, :class:`PretrainError`), ``loss`` (the terms
above), ``model`` (the encoders, the queue, shuffled batch normalisation, the mixup
draw), ``pretext`` (the pretext check recorded after every epoch), ``task`` (C2L as a
task of the training engine), ``run`` (:func:`pretrain_c2l`); ``pretrain.export``
writes the backbone in torchvision's key names.
"""

from cxrhash.pretrain.c2l.config import C2LConfig, PretrainError
from cxrhash.pretrain.c2l.loss import c2l_loss, info_nce, mixup_targets, soft_info_nce
from cxrhash.pretrain.c2l.model import C2LModel, ContrastiveEncoder, draw_mixup, grouped_forward
from cxrhash.pretrain.c2l.pretext import PRETEXT_IMAGES, instance_top1, pretext_views
from cxrhash.pretrain.c2l.run import pretrain_c2l
from cxrhash.pretrain.c2l.task import C2LTask, engine_settings
from cxrhash.pretrain.export import backbone_state_dict, torchvision_key_map

__all__ = [
    "PRETEXT_IMAGES",
    "C2LConfig",
    "C2LModel",
    "C2LTask",
    "ContrastiveEncoder",
    "PretrainError",
    "backbone_state_dict",
    "c2l_loss",
    "draw_mixup",
    "engine_settings",
    "grouped_forward",
    "info_nce",
    "instance_top1",
    "mixup_targets",
    "pretext_views",
    "pretrain_c2l",
    "soft_info_nce",
    "torchvision_key_map",
]
