"""Calibration reads an image folder with the graph's own preprocessing config."""

import cv2
import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_image

import torch_tpu
from torch_tpu.errors import ConfigError
from torch_tpu.frontends.preprocess import PreprocessConfig

MEAN, SCALE = (123.7, 116.3, 103.5), (0.0171, 0.0175, 0.0174)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for name in ("china.jpg", "flower.jpg"):
        rgb = load_sample_image(name)                       # real photos shipped with scikit-learn
        for i, (y, x) in enumerate([(0, 0), (100, 200), (200, 300)]):
            crop = np.ascontiguousarray(rgb[y:y + 160, x:x + 200])
            cv2.imwrite(str(folder / f"{name[:-4]}_{i}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    return folder


def _opencv_reference(folder):
    lo, hi = np.inf, -np.inf
    for path in sorted(folder.glob("*.png")):
        img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(np.float32)
        img = cv2.resize(img, (32, 32), interpolation=cv2.INTER_LINEAR)
        x = (img - np.array(MEAN, np.float32)) * np.array(SCALE, np.float32)
        lo, hi = min(lo, x.min()), max(hi, x.max())
    return lo, hi


def test_calibrate_on_an_image_folder_uses_the_preprocess_config(image_folder):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    cfg = PreprocessConfig(resize=(32, 32), mean=MEAN, scale=SCALE)
    top = torch_tpu.transform(model, (torch.randn(1, 3, 32, 32),), preprocess=cfg)
    table = torch_tpu.calibrate(top, image_folder, num_samples=6, tune_num=0, progress=False)
    entry = table[top.input_names[0]]
    lo, hi = _opencv_reference(image_folder)
    # torchvision's resize vs OpenCV's differ by about a grey level at most: one level is 0.0175 here
    assert abs(entry.min - lo) < 0.1 and abs(entry.max - hi) < 0.1, (entry, lo, hi)
    assert len(table) >= 4


def test_images_without_a_preprocess_config_are_refused(image_folder):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).eval()
    top = torch_tpu.transform(model, (torch.randn(1, 3, 32, 32),))
    with pytest.raises(ConfigError, match="preprocess"):
        torch_tpu.calibrate(top, image_folder, num_samples=2, tune_num=0, progress=False)
