import torch
import torch.nn as nn

from torch_tpu.fx_passes.permute_sinking import sink_permutes

from .helpers import run_pass

aten = torch.ops.aten
NHWC, NCHW = (0, 2, 3, 1), (0, 3, 1, 2)


class TfliteStyle(nn.Module):
    """What an NHWC importer makes: every conv in NCHW between two permutes, everything else in NHWC."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(4, 8, 3, padding=1)
        self.c2 = nn.Conv2d(4, 8, 1)
        self.c3 = nn.Conv2d(8, 8, 3)
        self.c4 = nn.Conv2d(16, 8, 1)
        self.register_buffer("alpha", torch.rand(8))       # PReLU slope per channel, NHWC-broadcast
        self.register_buffer("bias", torch.randn(8))

    def conv(self, conv, x_nhwc):
        return conv(x_nhwc.permute(*NCHW)).permute(*NHWC)

    def forward(self, x):
        x = x.permute(*NHWC)                                  # the model's NHWC input
        a = self.conv(self.c1, x) + self.conv(self.c2, x)     # residual add of two permuted convs
        a = torch.where(a >= 0, a, a * self.alpha)            # PReLU: one permute read three times
        a = torch.relu(a + self.bias)
        p = nn.functional.pad(a, (0, 0, 1, 1, 1, 1))          # NHWC pad of H and W
        b = self.conv(self.c3, p)
        s = b.mean((1, 2), keepdim=True)                      # squeeze: mean over H, W
        c = torch.cat([b * torch.sigmoid(s), b], dim=3)       # concat along C (NHWC dim 3)
        return self.conv(self.c4, c).permute(*NCHW)


def test_nhwc_round_trips_sink_and_cancel():
    r = run_pass(TfliteStyle(), (torch.randn(2, 4, 6, 6),), sink_permutes)
    assert r.result.modified
    assert r.before[aten.permute.default] == 10
    assert r.after[aten.permute.default] == 0      # every layout copy is gone, the result is unchanged
    # the pad now pads H and W of the NCHW tensor, the concat runs along C in NCHW
    pad = next(n for n in r.top.gm.graph.nodes if n.target is aten.constant_pad_nd.default)
    assert list(pad.args[1]) == [1, 1, 1, 1]
    cat = next(n for n in r.top.gm.graph.nodes if n.target is aten.cat.default)
    assert cat.args[1] == 1
    assert r.names["relu.unpermuted"].target is aten.relu.default


class ComputedNhwcOperand(nn.Module):
    def forward(self, x, w):
        q = x.permute(0, 2, 3, 1)
        return torch.sigmoid(q) + w      # w is computed (here: an input) in NHWC: the add cannot sink


def test_an_op_with_a_computed_operand_in_the_permuted_layout_keeps_its_permute():
    r = run_pass(ComputedNhwcOperand(), (torch.randn(2, 3, 4, 5), torch.randn(2, 4, 5, 3)), sink_permutes)
    assert r.after[aten.permute.default] == r.before[aten.permute.default] == 1
    add = next(n for n in r.top.gm.graph.nodes if n.target is aten.add.Tensor)
    assert add.args[0].target is aten.permute.default       # sigmoid sank below its permute; add did not
    assert add.args[0].args[0].target is aten.sigmoid.default
