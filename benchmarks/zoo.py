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


def build(name: str, small: bool = False, seed: int = 0) -> tuple[torch.nn.Module, tuple]:
    make, full, little = ZOO[name]
    torch.manual_seed(seed)
    model = make()
    for m in model.modules():  # non-trivial BatchNorm statistics, so BN folding is really exercised
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.manual_seed(seed + 1)
    return model, (little if small else full)()
