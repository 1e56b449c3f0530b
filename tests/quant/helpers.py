"""A small CNN trained on scikit-learn's digits (seconds), shared by the accuracy and weight-rounding tests."""

from __future__ import annotations

import torch
import torch.nn as nn


class DigitsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(16 * 16, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


def digits() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``((x_train, y_train), (x_test, y_test))``: 1400 training images, the other 397 for testing."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    x, y = x[perm], y[perm]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def trained_digits_net(xtr: torch.Tensor, ytr: torch.Tensor) -> DigitsNet:
    """:class:`DigitsNet` after 8 epochs of Adam (seed 0), in eval mode."""
    torch.manual_seed(0)
    model = DigitsNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _epoch in range(8):
        for i in range(0, len(ytr), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xtr[i:i + 64]), ytr[i:i + 64]).backward()
            opt.step()
    return model.eval()
