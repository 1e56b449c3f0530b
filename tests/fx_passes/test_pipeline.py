"""The whole pipeline on real models: equal to eager, BatchNorm gone, the checker green."""

import torch
import torch.utils._pytree as pytree

from torch_tpu.frontends import capture_module
from torch_tpu.fx_passes import PIPELINE, PassManager, check_top, graph_flops, run_pipeline

from .helpers import op_counts, rel_err

aten = torch.ops.aten
BN = aten._native_batch_norm_legit_no_training.default


def _run(model, inputs):
    """Capture, run the pipeline, check; return (TOP graph, op counts before the pipeline)."""
    model = model.eval()
    top = capture_module(model, inputs)
    before = op_counts(top.gm)
    assert run_pipeline(top.gm) is top.gm
    check_top(top.gm)
    with torch.no_grad():
        eager = pytree.tree_leaves(model(*inputs))
    out = top.run_flat(*inputs)
    assert len(out) == len(eager)
    for o, e in zip(out, eager):
        assert rel_err(o, e) <= 1e-5, rel_err(o, e)
    return top, before


def test_pipeline_order_is_one_list_with_unique_names():
    names = [p.name for p in PIPELINE]
    assert len(names) == len(set(names)) and names[-1] == "annotate_flops"
    assert names.index("recognize_hardswish") < names.index("fold_scale")


def test_resnet18():
    import torchvision
    top, _ = _run(torchvision.models.resnet18(), (torch.randn(1, 3, 64, 64),))
    counts = op_counts(top.gm)
    assert counts[BN] == 0 and counts[aten.convolution.default] == 20 and counts[aten.permute.default] == 0
    names = {n.meta["stable_name"]: n for n in top.gm.graph.nodes if n.op != "output"}
    assert names["layer1.0.bn1"].target is aten.convolution.default
    assert all("flops" in n.meta for n in top.gm.graph.nodes if n.op == "call_function")
    # 2 * MACs of resnet18 at 224x224 (1.814e9) scaled to 64x64, plus the element ops
    assert 2 * 1.814e9 * (64 / 224) ** 2 < graph_flops(top.gm) < 1.01 * 2 * 1.82e9 * (64 / 224) ** 2
    pm = PassManager(PIPELINE)
    assert not pm(top.gm).modified, [r.name for r in pm.records if r.modified]  # a second run changes nothing


def test_mobilenet_v3_small():
    import torchvision
    top, _ = _run(torchvision.models.mobilenet_v3_small(), (torch.randn(1, 3, 64, 64),))
    counts = op_counts(top.gm)
    assert counts[BN] == 0 and counts[aten.clamp.default] == 0 and counts[aten.div.Tensor] == 0
    assert counts[aten.hardswish.default] == 19 and counts[aten.hardsigmoid.default] == 9


def test_tiny_bert():
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    cfg = BertConfig(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=256)
    ids = torch.randint(0, cfg.vocab_size, (1, 16))
    top, before = _run(BertModel(cfg), (ids,))
    counts = op_counts(top.gm)
    # position / token-type embeddings of constant indices and the attention mask are folded
    assert before[aten.embedding.default] == 3 and counts[aten.embedding.default] == 1
    assert counts[aten.arange.start_step] == 0 and counts[aten.expand.default] == 0
    # the all-zero folded mask is no longer added (2 layers), nor is "arange + 0"
    assert counts[aten.add.Tensor] == before[aten.add.Tensor] - 3
