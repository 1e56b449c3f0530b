"""Shape/data-movement rules: view, permute, expand, cat, slice, select, split, squeeze, pad, upsample,
embedding, gather, clone, dtype copies."""

import torch
import torch.nn.functional as F

from _lowering_helpers import check_module


class ShapeNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)

    def forward(self, x, idx):
        a = x.permute(0, 2, 3, 1).reshape(2, -1, 3)[:, 1:7:2]          # permute, view, slice with step
        b = x[:, 1].unsqueeze(1).expand(2, 3, 4, 5).clone()              # select, unsqueeze, expand, clone
        c = torch.cat([x, b], dim=1)
        s0, s1 = torch.split(c, [2, 4], dim=1)
        d = F.pad(s1, [1, 2, 0, 1], value=0.5)
        e = F.interpolate(x, scale_factor=2, mode="nearest")
        f = F.interpolate(x, size=(7, 9), mode="bilinear", align_corners=False)
        g = F.interpolate(x, size=(6, 8), mode="bilinear", align_corners=True)
        h = self.emb(idx) + torch.gather(x.flatten(2), 2, idx.unsqueeze(0).expand(2, 3, 4))[..., None]
        k = x.to(torch.float64).to(torch.float32).squeeze(0) if x.shape[0] == 1 else x.double().float()
        return a, s0.sum(1), d, e, f, g, h, k


def test_shape_family():
    torch.manual_seed(0)
    check_module(ShapeNet(), [torch.randn(2, 3, 4, 5), torch.tensor([[1, 3, 5, 9]] * 3)])
