import torch
import torch.nn as nn

from torch_tpu.fx_passes.batchnorm_folding import fold_batchnorm

from .helpers import run_pass

aten = torch.ops.aten
BN = aten._native_batch_norm_legit_no_training.default


def _randomize(bn: nn.Module) -> nn.Module:
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        if bn.affine:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-1, 1)
    return bn


class Layers(nn.Module):
    """Three foldable BatchNorms (conv, grouped conv with bias and no affine, linear) and two that are not."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.bn = _randomize(nn.BatchNorm2d(8, eps=1e-3))
        self.gconv = nn.Conv2d(4, 6, 3, groups=2)
        self.gbn = _randomize(nn.BatchNorm2d(6, affine=False))
        self.fc = nn.Linear(6, 5)
        self.fbn = _randomize(nn.BatchNorm1d(5))
        self.lone = _randomize(nn.BatchNorm2d(4))
        self.shared = nn.Conv2d(4, 4, 1)
        self.sbn = _randomize(nn.BatchNorm2d(4))

    def forward(self, x, v):
        y = self.shared(x)
        return (torch.relu(self.bn(self.conv(x))), self.gbn(self.gconv(x)), self.fbn(self.fc(v)),
                self.lone(x + 1),  # nothing to fold into
                self.sbn(y) + y)   # the conv output is used twice: folding would change the second use


def test_bn_folds_into_conv_and_linear_and_keeps_the_bn_name():
    r = run_pass(Layers(), (torch.randn(2, 4, 8, 8), torch.randn(3, 6)), fold_batchnorm)
    assert r.result.modified
    assert r.before[BN] == 5 and r.after[BN] == 2
    assert r.names["bn"].target is aten.convolution.default  # the conv+bn output is still called "bn"
    assert r.names["gbn"].target is aten.convolution.default
    assert r.names["fbn"].target is aten.addmm.default
    assert r.names["conv.weight"].op == "get_attr" and r.names["bn.bias"].op == "get_attr"
    assert r.names["lone#tuple"].target is BN and r.names["sbn#tuple"].target is BN
    assert not any(name.startswith(("bn.running", "fbn.running", "gbn.running")) for name in r.names)
