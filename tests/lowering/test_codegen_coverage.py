"""Codegen of the ops beyond conv nets, each against the TPU graph (outputs, and every op on the Program's own
probed inputs, ``_codegen_local.check_layers``): comparisons / logical ops / where (uint8 masks), embedding
(run-time row gather), matmul with broadcast batch dims, reductions and softmax over any dims, nearest and
bilinear upsample, adaptive average pooling, rank-5 and cropping data movement, streamed (C/K/N-tiled) conv and
linear weights, and a one-block transformer built in the test."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _codegen_helpers import assert_close, compile_module
from _codegen_local import check_layers, program_feed
from torch_tpu.cmodel import isa, run_program


def check(model, inputs, precisions=("f32", "bf16"), kernels=("c", "reference"), target="bm1684x",
          long_sums=False):
    """Outputs and every op of the Program vs the TPU graph; returns {precision: Program}.

    ``long_sums``: the outputs are sums of thousands of terms, which two summation orders may round
    apart by more than ``F32_REL``; they are then held to the summation bound of ``check_layers`` only."""
    progs = {}
    model = model.eval()
    for p in precisions:
        tpu, prog, _ = compile_module(model, inputs, p, target)
        with torch.no_grad():
            ref = tpu(*inputs)
        ref = tuple(ref) if isinstance(ref, (tuple, list)) else (ref,)
        for k in kernels:
            out = run_program(prog, program_feed(prog, inputs), kernels=k)
            for i, r in enumerate(ref):
                o = out[f"output{i}"]
                if r.dtype.is_floating_point:
                    if not long_sums:
                        assert_close(o, r, p)
                else:
                    assert torch.equal(o.to(r.dtype), r), i
            check_layers(tpu, prog, inputs, p, k)
        progs[p] = prog
    return progs


def opcodes(prog) -> set[str]:
    return {i.OPCODE for i in prog.instructions}


class Masks(torch.nn.Module):
    def forward(self, x, y):
        m = ((x > 0.3) & (y <= x)) | ~(x == 0.5) & (y != 0.25)
        z = torch.where(m, x, y * 2.0)                       # select, broadcast-free
        f = x.masked_fill(x < -0.5, float("-inf"))
        rows = (f == float("-inf")).all(-1, keepdim=True)    # reduce_any over the mask
        s = f.softmax(-1)                                    # NaN rows where all are -inf
        w = torch.where(rows, torch.zeros_like(s), s)        # broadcast condition (..., 1)
        return z, w, rows, 2.0 < x


def test_masks_where_reduce_any():
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 5, 7), torch.randn(2, 3, 5, 7)
    x[0, 0, 0] = -1.0  # a row masked out entirely
    progs = check(Masks(), [x, y])
    assert {"compare", "select"} <= opcodes(progs["f32"])


class Embed(torch.nn.Module):
    def __init__(self, vocab=300, dim=24):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim)
        self.fc = torch.nn.Linear(dim, 8)

    def forward(self, ids):
        return self.fc(self.emb(ids))


def test_embedding_gather():
    torch.manual_seed(0)
    ids = torch.tensor([[0, 299, 5, 64, 63, 128], [7, 7, 200, 1, 298, 100]])
    progs = check(Embed(), [ids])
    prog = progs["f32"]
    assert prog.inputs[0].dtype.label == "int32"  # int64 indices are int32 in the Program
    assert "gather" in opcodes(prog)


def test_embedding_table_streams_in_blocks():
    """cv183x (32 KiB a lane): a 10000 x 64 bf16 table (40 KiB a lane) streams through in row blocks."""
    torch.manual_seed(0)
    ids = torch.randint(0, 10000, (1, 40))
    ids[0, :3] = torch.tensor([0, 9999, 5000])
    progs = check(Embed(10000, 64), [ids], precisions=("bf16",), kernels=("c",), target="cv183x")
    gathers = [i for i in progs["bf16"].instructions if isinstance(i, isa.Gather)]
    assert len(gathers) > 1 and gathers[1].prev is not None


class BatchedMatmul(torch.nn.Module):
    def forward(self, a, b, c, d):
        return a @ b, c @ d, torch.matmul(d.transpose(-1, -2)[:1], a[0].transpose(-1, -2))


def test_matmul_broadcast_batch():
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 5, 8), torch.randn(3, 8, 4)      # b broadcast over the leading 2
    c, d = torch.randn(5, 8), torch.randn(2, 3, 8, 6)         # a shared by every batch item
    check(BatchedMatmul(), [a, b, c, d])


class Reductions(torch.nn.Module):
    def forward(self, x):
        return (x.sum(1), x.mean((0, 2)), x.amax(1, keepdim=True), x.amin((1, 3)), torch.softmax(x, 1),
                torch.log_softmax(x, 2), x.sum((0, 1, 2, 3)))


def test_reduce_and_softmax_any_dims():
    torch.manual_seed(0)
    check(Reductions(), [torch.randn(3, 4, 6, 5)])


class Resample(torch.nn.Module):
    def forward(self, x):
        return (F.interpolate(x, scale_factor=2, mode="nearest"), F.interpolate(x, size=(3, 2), mode="nearest"),
                F.interpolate(x, size=(12, 4), mode="nearest"),
                F.adaptive_avg_pool2d(x[:, :, :2, :2], 7), F.adaptive_avg_pool2d(x, (3, 2)),
                F.adaptive_avg_pool2d(x, (5, 3)), F.adaptive_avg_pool2d(x[:, :, :2, :2], (4, 6)))


def test_upsample_nearest_and_adaptive_pool():
    torch.manual_seed(0)
    progs = check(Resample(), [torch.randn(1, 5, 6, 4)])
    assert {"dma_copy", "pool2d", "reduce"} <= opcodes(progs["f32"])


class Bilinear(torch.nn.Module):
    def forward(self, x):
        return (F.interpolate(x, scale_factor=2, mode="bilinear"),
                F.interpolate(x, size=(5, 9), mode="bilinear", align_corners=True),
                F.interpolate(x, size=(3, 2), mode="bilinear"))


def test_upsample_bilinear():
    torch.manual_seed(0)
    progs = check(Bilinear(), [torch.randn(1, 70, 6, 4)])
    assert {"matmul", "eltwise"} <= opcodes(progs["bf16"])


class Movement(torch.nn.Module):
    def forward(self, x):
        q = x.reshape(2, 3, 2, 5, 4).permute(2, 0, 3, 1, 4)    # rank-5 permute
        s = q[1:, :, 1:4:2] * 1.0                             # rank-5 slice
        p = F.pad(x, (-1, 2, 1, -2))                          # crop and pad
        f = torch.full_like(x, 3.0) + x
        return s, p, f, x.clone().transpose(1, 2) + 0.0


def test_rank5_and_cropping_movement():
    torch.manual_seed(0)
    check(Movement(), [torch.randn(2, 6, 5, 4)])


def test_linear_weights_stream_in_blocks():
    """cv183x (32 KiB a lane): W 4096 x 300 bf16 needs N blocks and K blocks (f32 partial sums)."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4096, 300), torch.nn.ReLU(), torch.nn.Linear(300, 40))
    progs = check(m, [torch.randn(3, 4096)], precisions=("bf16",), target="cv183x")
    mms = [i for i in progs["bf16"].instructions if isinstance(i, isa.MatMul) and i.a.shape[3] < 4096]
    assert len(mms) > 2 and any(isinstance(i, isa.Eltwise) and i.op == "add" for i in progs["bf16"].instructions)


def test_linear_n_blocks_keep_x_loaded():
    """cv183x bf16: W 1024 x 512 (32 KiB a lane) with all of K beside a block of weight columns: only N is cut,
    x stays loaded, no partial sums."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(1024, 512), torch.nn.ReLU())
    prog = check(m, [torch.randn(2, 1024)], precisions=("bf16",), target="cv183x", long_sums=True)["bf16"]
    mms = [i for i in prog.instructions if isinstance(i, isa.MatMul)]
    assert len(mms) > 1 and all(i.a.shape[3] == 1024 for i in mms)
    assert not any(isinstance(i, isa.Eltwise) for i in prog.instructions)


def test_conv_weights_split_by_output_channels():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(128, 512, 3, padding=1), torch.nn.ReLU(),
                            torch.nn.Conv2d(512, 512, 3, padding=1, groups=4))
    prog = check(m, [torch.randn(1, 128, 6, 5)], precisions=("bf16",), target="cv183x")["bf16"]
    assert sum(isinstance(i, isa.Conv2d) for i in prog.instructions) > 2


def test_one_block_vit():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=1,
                                                           num_heads=2, num_classes=10)
    progs = check(vit, [torch.randn(1, 3, 32, 32)], kernels=("c",))
    assert {"compare", "select", "matmul", "softmax", "layernorm"} <= opcodes(progs["f32"])


@pytest.mark.slow  # importing transformers alone takes ~10 s
def test_one_layer_bert():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=100, max_position_embeddings=16)

    class Bert(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = transformers.BertModel(cfg).eval()

        def forward(self, ids):
            out = self.bert(input_ids=ids)
            return out.last_hidden_state, out.pooler_output

    progs = check(Bert(), [torch.randint(0, 100, (1, 8))], kernels=("c",))
    assert "gather" in opcodes(progs["f32"])


class CeilPools(torch.nn.Module):
    def forward(self, x):
        return (F.max_pool2d(x, 3, 2, ceil_mode=True),                   # googlenet's pool: overhangs the input
                F.max_pool2d(x, 3, 2, 1, ceil_mode=True),
                F.avg_pool2d(x, 3, 2, ceil_mode=True),                   # no pads: the overhang is not counted
                F.avg_pool2d(x, 2, 2, 1, ceil_mode=True, count_include_pad=False),
                F.avg_pool2d(x, (3, 2), (2, 3), ceil_mode=True, count_include_pad=False))


def test_ceil_mode_pools_overhang_as_padding():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 8, 9)
    progs = check(CeilPools(), [x])
    # the graph really has overhanging windows: each output is larger than with floor
    for out, floor in zip(CeilPools()(x), (F.max_pool2d(x, 3, 2), F.max_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2))):
        assert out.shape[-1] > floor.shape[-1] or out.shape[-2] > floor.shape[-2]
    assert "pool2d" in opcodes(progs["f32"])
