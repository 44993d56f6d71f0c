"""The base of every hashing network: its own feature path, then the one shared head.

In the style of timm, a network is two halves:

* ``forward_features(x)`` — the network's own part: the backbone and what the method
  adds on it (attention, saliency, crops, fusion), ending in one pooled B×D vector
  (plus the maps and guiding logits the method reports), a :class:`Features`;
* ``forward_head(features)`` — the wiring every network shares: FC + ReLU (the float
  embedding ``HashOutput.features``) → ``HashHead`` (hash layer, classifier, code
  rotation) → :class:`~cxrhash.models.output.HashOutput`;

and ``forward(x) = forward_head(forward_features(x))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cxrhash.models.hash_head import HashHead
from cxrhash.models.output import HashOutput, binarize


@dataclass
class Features:
    """What a network's feature path hands to the shared head.

    Attributes:
        pooled: B×D vector the head's FC reads (e.g. the fused global and local
            descriptors).
        attention: B×1×h×w attention or saliency map, ``None`` for networks without one.
        logits: B×C logits of a classifier of the feature path that the network reports
            as ``HashOutput.logits`` instead of the head classifier's (semantic
            attention's guiding classifier); ``None`` = the head classifier's.
        aux_logits: B×C logits of an auxiliary classifier (``HashOutput.aux_logits``).
    """

    pooled: Tensor
    attention: Tensor | None = None
    logits: Tensor | None = None
    aux_logits: Tensor | None = None


class HashModel(nn.Module):
    """A hashing network: ``forward`` returns a ``HashOutput``, ``encode`` its bits.

    Subclasses build their feature path, then call :meth:`build_head` last (so the
    head's parameters are initialised after the feature path's and its state-dict
    keys ``fc.*`` and ``head.*`` come last), and implement :meth:`forward_features`.
    """

    bits: int
    fc: nn.Sequential
    head: HashHead

    def build_head(
        self,
        in_dim: int,
        *,
        bits: int,
        num_classes: int,
        fc_dim: int,
        activation: str = "identity",
        classify_codes: bool = False,
    ) -> None:
        """Add the shared head: FC (``in_dim`` → ``fc_dim``) + ReLU → ``HashHead`` (``bits``)."""
        self.bits = bits
        self.fc = nn.Sequential(nn.Linear(in_dim, fc_dim), nn.ReLU(inplace=True))
        self.head = HashHead(fc_dim, bits, num_classes, activation, classify_codes)

    def forward_features(self, x: Tensor) -> Features:
        """The network's own feature path for B×1×S×S images in [0, 1]."""
        raise NotImplementedError

    def forward_head(self, features: Features) -> HashOutput:
        """The shared head on the feature path's output."""
        embedding = self.fc(features.pooled)
        f, logits = self.head(embedding)
        return HashOutput(
            hash=f,
            logits=logits if features.logits is None else features.logits,
            features=embedding,
            attention=features.attention,
            aux_logits=features.aux_logits,
        )

    def forward(self, x: Tensor) -> HashOutput:
        """Run the network on B×1×S×S images in [0, 1]."""
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Binary codes (B×k bool, see ``binarize``) computed in eval mode.

        The previous train/eval mode is restored afterwards.
        """
        was_training = self.training
        self.eval()
        try:
            return binarize(self(x).hash)
        finally:
            self.train(was_training)
