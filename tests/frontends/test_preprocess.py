"""PreprocessConfig against a hand-written OpenCV reference on a real photograph (sklearn's china.jpg)."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import sklearn.datasets
import torch

from torch_tpu.errors import ConfigError, ModelFormatError
from torch_tpu.frontends.preprocess import PreprocessConfig

JPEG = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", "china.jpg")


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> str:
    """The photo cropped to an odd size and stored losslessly, so both decoders give the same pixels."""
    path = str(tmp_path_factory.mktemp("img") / "china.png")
    cv2.imwrite(path, cv2.imread(JPEG)[13:13 + 301, 40:40 + 417])
    return path


def reference(path: str, cfg: PreprocessConfig) -> np.ndarray:
    """The same steps written with OpenCV (which reads BGR)."""
    img = cv2.imread(path).astype(np.float32)
    if cfg.pixel_format == "rgb":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif cfg.pixel_format == "gray":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[:, :, None]
    if cfg.resize:
        H, W = cfg.resize
        h, w = img.shape[:2]
        if cfg.keep_aspect_ratio:
            r = min(H / h, W / w)
            nh, nw = round(h * r), round(w * r)
            small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR).reshape(nh, nw, -1)
            canvas = np.full((H, W, img.shape[2]), cfg.pad_value, np.float32)
            top, left = (H - nh) // 2, (W - nw) // 2
            canvas[top:top + nh, left:left + nw] = small
            img = canvas
        else:
            img = cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR).reshape(H, W, -1)
    img = (img - np.array(cfg.mean, np.float32)) * np.array(cfg.scale, np.float32)
    img = img[None]
    return img if cfg.channel_format == "nhwc" else img.transpose(0, 3, 1, 2)


CONFIGS = [
    PreprocessConfig(resize=(64, 96), mean=(123.675, 116.28, 103.53), scale=(0.01712, 0.01751, 0.01743)),
    PreprocessConfig(resize=(200, 180), mean=(104.0, 117.0, 123.0), pixel_format="bgr", channel_format="nhwc"),
    PreprocessConfig(resize=(80, 80), mean=(127.5,), scale=(1 / 127.5,), keep_aspect_ratio=True, pad_value=114),
    PreprocessConfig(resize=(120, 50), pixel_format="gray", scale=(1 / 255,), keep_aspect_ratio=True),
    PreprocessConfig(mean=(1.0, 2.0, 3.0)),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.pixel_format}-{c.channel_format}-{c.resize}")
def test_load_image_matches_opencv(png, cfg):
    got = cfg.load_image(png)
    want = reference(png, cfg)
    assert tuple(got.shape) == want.shape and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=2e-4 * max(1.0, float(np.abs(want).max())))


def test_jpeg_decoders_agree_closely():
    """torchvision and OpenCV decode the JPEG with different IDCTs: at most a few levels apart."""
    cfg = PreprocessConfig()
    got = cfg.load_image(JPEG)[0].permute(1, 2, 0).numpy()
    want = cv2.cvtColor(cv2.imread(JPEG), cv2.COLOR_BGR2RGB).astype(np.float32)
    assert got.shape == want.shape and np.abs(got - want).mean() < 1.0


def test_dict_round_trip_and_json():
    for cfg in CONFIGS:
        d = json.loads(json.dumps(cfg.to_dict()))
        assert PreprocessConfig.from_dict(d) == cfg


@pytest.mark.parametrize("kwargs,match", [
    ({"pixel_format": "yuv"}, "pixel_format"), ({"channel_format": "chw"}, "channel_format"),
    ({"mean": (1.0, 2.0)}, "mean has 2 values"), ({"pixel_format": "gray", "scale": (1, 2, 3)}, "scale has 3"),
    ({"resize": (0, 5)}, "resize"), ({"keep_aspect_ratio": True}, "needs resize"),
])
def test_bad_configs(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PreprocessConfig(**kwargs)
    with pytest.raises(ConfigError, match="unknown key"):
        PreprocessConfig.from_dict({"mean": [0.0], "std": [1.0]})


def test_load_folder(tmp_path, png):
    cfg = PreprocessConfig(resize=(16, 16))
    (tmp_path / "a.png").write_bytes(open(png, "rb").read())
    np.save(tmp_path / "b.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    np.savez(tmp_path / "c.npz", first=np.ones(2, np.int64), second=np.zeros((1, 2), np.float32))
    (tmp_path / "notes.txt").write_text("skipped")
    out = list(cfg.load_folder(tmp_path))
    assert [tuple(t.shape) for t in out] == [(1, 3, 16, 16), (2, 3), (2,), (1, 2)]
    assert torch.equal(out[1], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    np.save(tmp_path / "d.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ModelFormatError, match="d.npy"):
        list(cfg.load_folder(tmp_path))
    (tmp_path / "e.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ModelFormatError):
        cfg.load_image(tmp_path / "e.jpg")
    with pytest.raises(ConfigError):
        list(cfg.load_folder(tmp_path / "absent"))
