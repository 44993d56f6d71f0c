"""Feature-refinement block f(·) of SPEC §1: residual block, 3×3 average pooling, 256-d vector."""

from __future__ import annotations

from torch import Tensor, nn


class FeatureRefinement(nn.Module):
    """Refine a B×K×h×w feature map into a B×out_dim vector.

    Layers:

    1. 1×1 conv K→width + BN + ReLU. Not in SPEC: it makes the 3×3 residual
       conv affordable on 1024/2048-channel ResNet-50/DenseNet maps
       (a 3×3 conv at 1024 channels alone has 9.4 M weights; at width 256, 0.6 M).
    2. One residual block exactly as SPEC: ``x + ReLU(BN(conv3×3(x)))``.
    3. 3×3 average pooling, stride 1, padding 1 (``count_include_pad=False`` so
       border positions are averaged over real values only).
    4. Global average pooling, then a linear layer width→out_dim (no activation;
       the fusion FC that follows supplies the non-linearity).
    """

    def __init__(self, in_channels: int, out_dim: int = 256, width: int = 256) -> None:
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.residual = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.local_pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.proj = nn.Linear(width, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """B×K×h×w map → B×out_dim vector."""
        x = self.reduce(x)
        x = x + self.residual(x)
        x = self.local_pool(x)
        return self.proj(x.mean(dim=(2, 3)))
