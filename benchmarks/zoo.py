"""The model zoo shared by tests and benchmarks: name -> (model builder, example inputs builder).

Random weights with a fixed seed (nothing is downloaded). Sizes are the models' natural ones; tests may ask
for smaller inputs where the architecture allows (``small=True``).
"""

from __future__ import annotations

from typing import Callable

import torch


def _tv(name: str, **kw) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import torchvision
        return getattr(torchvision.models, name)(**kw).eval()
    return build


def _vit() -> torch.nn.Module:
    import timm
    return timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()


class _BertLogits(torch.nn.Module):
    """BertModel returning its last hidden state and pooled output as a tuple."""

    def __init__(self):
        super().__init__()
        from transformers import BertConfig, BertModel
        cfg = BertConfig(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=256,
                         vocab_size=1000, max_position_embeddings=64)
        self.bert = BertModel(cfg).eval()

    def forward(self, input_ids):
        out = self.bert(input_ids=input_ids)
        return out.last_hidden_state, out.pooler_output


def _image(size: int) -> Callable[[], tuple[torch.Tensor, ...]]:
    return lambda: (torch.randn(1, 3, size, size),)


ZOO: dict[str, tuple[Callable[[], torch.nn.Module], Callable[[], tuple], Callable[[], tuple]]] = {
    # name: (build, full-size inputs, small inputs for tests)
    "resnet18": (_tv("resnet18"), _image(224), _image(96)),
    "resnet50": (_tv("resnet50"), _image(224), _image(224)),
    "mobilenet_v2": (_tv("mobilenet_v2"), _image(224), _image(96)),
    "mobilenet_v3_small": (_tv("mobilenet_v3_small"), _image(224), _image(96)),
    "efficientnet_b0": (_tv("efficientnet_b0"), _image(224), _image(96)),
    "vgg11_bn": (_tv("vgg11_bn"), _image(224), _image(64)),
    "vit_tiny_patch16_224": (_vit, _image(224), _image(224)),
    "bert_2layer": (_BertLogits, lambda: (torch.randint(0, 1000, (1, 32)),), lambda: (torch.randint(0, 1000, (1, 16)),)),
}


def set_bn_statistics(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """Give every BatchNorm the statistics of one batch, as unit second moments with mean 0.

    With random weights the default statistics (mean 0, var 1) let activations shrink to ~1e-8 deep in the
    mobilenets — below f16's range whatever a compiler does — and plain batch statistics give per-channel
    means many times the spread, so every BatchNorm amplifies the rounding of a bf16 input and the error
    grows with depth (the float graph run in bf16 loses the same way). Unit second moments keep activations
    O(1) without that cancellation, as in trained networks, and keep BN folding non-trivial.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model.eval()
    for m in bns:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.cat([x, x.flip(-1)]))
        for m in bns:
            m.running_var += m.running_mean ** 2
            m.running_mean.zero_()
    return model.eval()


def build(name: str, small: bool = False, seed: int = 0) -> tuple[torch.nn.Module, tuple]:
    """``(model in eval mode, example inputs)``; BatchNorm statistics from one batch (see above)."""
    make, full, little = ZOO[name]
    torch.manual_seed(seed)
    model = make()
    torch.manual_seed(seed + 1)
    inputs = (little if small else full)()
    if inputs[0].is_floating_point():
        set_bn_statistics(model, inputs[0])
    return model.eval(), inputs
