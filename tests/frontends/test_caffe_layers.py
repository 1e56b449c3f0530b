"""Caffe layer coverage: small synthetic nets with random weights, torch_tpu vs OpenCV's dnn module."""

from __future__ import annotations

import numpy as np
import torch

from conftest_caffe import compare_with_opencv, write_net
from torch_tpu.frontends.caffe import load_caffe
from torch_tpu.fx_passes.checker import check_top


def rnd(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def header(*shape, name="data"):
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'name: "t"\nlayer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'


def check(tmp_path, text, weights, inputs, tol=1e-5):
    proto, model = write_net(tmp_path, text, weights)
    top = load_caffe(proto, model)
    assert top.source == "caffe"
    check_top(top.gm)
    compare_with_opencv(top, proto, model, inputs, tol)
    return top


def test_conv_bn_scale_relu_inplace_chain(tmp_path):
    """group, dilation, _h/_w forms; BatchNorm with scale_factor; in-place chain naming."""
    rng = np.random.default_rng(0)
    text = header(1, 4, 11, 10) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 2 group: 2 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { use_global_stats: true eps: 1e-3 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 3 kernel_size: 3 dilation: 2 pad: 2 bias_term: false } }
layer { name: "drop" type: "Dropout" bottom: "conv2" top: "conv2" }
layer { name: "leaky" type: "ReLU" bottom: "conv2" top: "leaky" relu_param { negative_slope: 0.1 } }
"""
    w = {"conv1": [rnd(rng, 6, 2, 3, 2), rnd(rng, 6)],
         "bn1": [rnd(rng, 6) * 8, np.abs(rnd(rng, 6)) * 8 + 1, np.array([8.0], np.float32)],
         "scale1": [rnd(rng, 6), rnd(rng, 6)], "conv2": [rnd(rng, 3, 6, 3, 3)]}
    top = check(tmp_path, text, w, {"data": rnd(rng, 1, 4, 11, 10)})
    names = top.named_values(torch.zeros(1, 4, 11, 10))
    for expected in ("data", "conv1.conv1", "conv1.bn1", "conv1.scale1", "conv1", "conv2", "leaky"):
        assert expected in names, (expected, list(names))
    attrs = {n.meta["stable_name"] for n in top.gm.graph.nodes if n.op == "get_attr"}
    assert {"conv1.weight", "conv1.bias", "bn1.mean", "bn1.variance", "scale1.weight", "scale1.bias",
            "conv2.weight"} <= attrs
    assert top.output_names == ["leaky"]


def test_deconvolution_groups_and_batchnorm_without_statistics(tmp_path):
    """Deconvolution with groups and _h/_w forms; BatchNorm whose scale_factor is 0 (Caffe: mean = var = 0)."""
    rng = np.random.default_rng(2)
    text = header(1, 4, 5, 6) + """
layer { name: "up" type: "Deconvolution" bottom: "data" top: "up"
  convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 2 } }
layer { name: "up2" type: "Deconvolution" bottom: "up" top: "up2"
  convolution_param { num_output: 2 kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 2 bias_term: false } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }
"""
    w = {"up": [rnd(rng, 4, 3, 4, 4), rnd(rng, 6)], "up2": [rnd(rng, 6, 2, 3, 2)],
         "bn": [rnd(rng, 4), np.ones(4, np.float32), np.zeros(1, np.float32)]}
    check(tmp_path, text, w, {"data": rnd(rng, 1, 4, 5, 6)})


POOL_CASES = [
    ("MAX", 6, 3, 2, 0),   # ceil: 3 windows where floor gives 2
    ("AVE", 6, 3, 2, 0),
    ("MAX", 7, 3, 2, 1),
    ("AVE", 7, 2, 2, 1),   # H: 5 windows clipped to 4; W: the average divides by the window cut at W + pad
    ("AVE", 8, 3, 3, 1),
    ("MAX", 5, 2, 1, 1),
    ("MAX", 7, 3, 2, 2),   # pad > kernel/2: explicit padding, output cut to Caffe's size
    ("AVE", 7, 3, 2, 2),
]


def test_pooling_ceil_clipping_global_rectangular(tmp_path):
    """Caffe's ceil rounding and clipping rule (one Pooling layer per case), global and rectangular pooling."""
    rng = np.random.default_rng(3)
    text, inputs = 'name: "t"\n', {}
    for i, (pool, size, k, s, p) in enumerate(POOL_CASES):
        text += (f'layer {{ name: "x{i}" type: "Input" top: "x{i}" input_param {{ shape {{ dim: 1 dim: 2 '
                 f'dim: {size} dim: {size + 1} }} }} }}\n'
                 f'layer {{ name: "pool{i}" type: "Pooling" bottom: "x{i}" top: "pool{i}" '
                 f'pooling_param {{ pool: {pool} kernel_size: {k} stride: {s} pad: {p} }} }}\n')
        inputs[f"x{i}"] = rnd(rng, 1, 2, size, size + 1)
    text += """
layer { name: "gmax" type: "Pooling" bottom: "x0" top: "gmax" pooling_param { pool: MAX global_pooling: true } }
layer { name: "gave" type: "Pooling" bottom: "x0" top: "gave" pooling_param { pool: AVE global_pooling: true } }
layer { name: "rect" type: "Pooling" bottom: "x4" top: "rect"
  pooling_param { pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 1 } }
"""
    top = check(tmp_path, text, {}, inputs)
    shapes = [tuple(v.shape[2:]) for v in top.run_flat(*map(torch.from_numpy, inputs.values()))]
    assert shapes == [(3, 3), (3, 3), (4, 5), (4, 5), (3, 4), (6, 7), (5, 5), (5, 5), (1, 1), (1, 1), (5, 4)]


def test_eltwise_slice_concat_split_crop(tmp_path):
    """Eltwise SUM with coeffs / PROD / MAX, Slice at points and in equal parts, Concat, Split, Crop."""
    rng = np.random.default_rng(5)
    text = header(2, 6, 4, 4, name="a") + """
layer { name: "b" type: "Input" top: "b" input_param { shape { dim: 2 dim: 6 dim: 4 dim: 4 } } }
layer { name: "c" type: "Input" top: "c" input_param { shape { dim: 2 dim: 6 dim: 4 dim: 4 } } }
layer { name: "ref" type: "Input" top: "ref" input_param { shape { dim: 2 dim: 6 dim: 3 dim: 2 } } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "sum"
  eltwise_param { operation: SUM coeff: 0.5 coeff: -1 coeff: 2 } }
layer { name: "prod" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "prod" eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "max" eltwise_param { operation: MAX } }
layer { name: "plain" type: "Eltwise" bottom: "a" bottom: "b" top: "plain" }
layer { name: "split" type: "Split" bottom: "plain" top: "d1" top: "d2" }
layer { name: "slice" type: "Slice" bottom: "d1" top: "s0" top: "s1" top: "s2" slice_param { axis: 1 slice_point: 1 slice_point: 4 } }
layer { name: "slice_eq" type: "Slice" bottom: "d2" top: "h0" top: "h1" slice_param { axis: 2 } }
layer { name: "r0" type: "ReLU" bottom: "s0" top: "r0" }
layer { name: "cat" type: "Concat" bottom: "s2" bottom: "r0" bottom: "s1" top: "cat" }
layer { name: "cat_h" type: "Concat" bottom: "h1" bottom: "h0" top: "cat_h" concat_param { axis: -2 } }
layer { name: "crop" type: "Crop" bottom: "cat_h" bottom: "ref" top: "crop" crop_param { axis: 2 offset: 1 offset: 2 } }
layer { name: "crop1" type: "Crop" bottom: "max" bottom: "ref" top: "crop1" crop_param { offset: 1 } }
"""
    top = check(tmp_path, text, {}, {n: rnd(rng, 2, 6, 4, 4) for n in "abc"} | {"ref": rnd(rng, 2, 6, 3, 2)})
    assert top.input_names == ["a", "b", "c", "ref"]
    assert top.output_names == ["sum", "prod", "cat", "crop", "crop1"]
    assert top.meta["caffe"]["aliases"] == {"d1": "plain", "d2": "plain"}
    values = top.named_values(*top.example_inputs())
    assert {"s0", "s1", "s2", "h0", "h1", "plain", "max"} <= set(values)


def test_activations_shapes_scale_interp(tmp_path):
    """PReLU, Sigmoid, TanH, Power, ELU, AbsVal, Softmax, Permute, Flatten, Reshape, Scale, Interp."""
    rng = np.random.default_rng(9)
    text = header(2, 4, 3, 5) + """
layer { name: "s" type: "Input" top: "s" input_param { shape { dim: 4 dim: 3 } } }
layer { name: "prelu" type: "PReLU" bottom: "data" top: "prelu" }
layer { name: "prelu_s" type: "PReLU" bottom: "data" top: "prelu_s" prelu_param { channel_shared: true } }
layer { name: "sig" type: "Sigmoid" bottom: "data" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "data" top: "tanh" }
layer { name: "pow" type: "Power" bottom: "data" top: "pow" power_param { power: 2 scale: 0.5 shift: 1 } }
layer { name: "elu" type: "ELU" bottom: "data" top: "elu" elu_param { alpha: 0.7 } }
layer { name: "abs" type: "AbsVal" bottom: "data" top: "abs" }
layer { name: "perm" type: "Permute" bottom: "data" top: "perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "flat" type: "Flatten" bottom: "perm" top: "flat" }
layer { name: "resh" type: "Reshape" bottom: "data" top: "resh" reshape_param { shape { dim: 0 dim: -1 dim: 10 } } }
layer { name: "sm" type: "Softmax" bottom: "resh" top: "sm" softmax_param { axis: 2 } }
layer { name: "sm1" type: "Softmax" bottom: "data" top: "sm1" }
layer { name: "sc2" type: "Scale" bottom: "data" bottom: "s" top: "sc2" }
layer { name: "sc" type: "Scale" bottom: "data" top: "sc" scale_param { axis: 2 num_axes: 2 bias_term: true } }
layer { name: "zoom" type: "Interp" bottom: "data" top: "zoom" interp_param { zoom_factor: 3 } }
layer { name: "hw" type: "Interp" bottom: "data" top: "hw" interp_param { height: 9 width: 4 } }
"""
    w = {"prelu": [rnd(rng, 4)], "prelu_s": [np.array([0.3], np.float32)], "sc": [rnd(rng, 3, 5), rnd(rng, 3, 5)]}
    check(tmp_path, text, w, {"data": rnd(rng, 2, 4, 3, 5), "s": rnd(rng, 4, 3)})


def test_fields_opencv_does_not_read_against_numpy(tmp_path):
    """Upsample, InnerProduct transpose, slice_dim, concat_dim, Bias, round_mode FLOOR, Interp shrink_factor:
    OpenCV has no Upsample/Bias layer and ignores transpose/slice_dim/concat_dim/round_mode/shrink_factor,
    so numpy is the reference."""
    rng = np.random.default_rng(12)
    text = header(2, 3, 4, 5) + """
layer { name: "up" type: "Upsample" bottom: "data" top: "up" upsample_param { scale: 2 } }
layer { name: "up2" type: "Upsample" bottom: "data" top: "up2" upsample_param { scale_h: 3 scale_w: 1 } }
layer { name: "ipt" type: "InnerProduct" bottom: "data" top: "ipt" inner_product_param { num_output: 7 transpose: true } }
layer { name: "ip2" type: "InnerProduct" bottom: "data" top: "ip2" inner_product_param { num_output: 6 axis: 2 bias_term: false } }
layer { name: "sl" type: "Slice" bottom: "data" top: "w0" top: "w1" slice_param { slice_dim: 3 slice_point: 2 } }
layer { name: "cat" type: "Concat" bottom: "w1" bottom: "w0" top: "cat" concat_param { concat_dim: 3 } }
layer { name: "b" type: "Bias" bottom: "data" top: "b" }
layer { name: "pf" type: "Pooling" bottom: "data" top: "pf" pooling_param { pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR } }
layer { name: "odd" type: "Input" top: "odd" input_param { shape { dim: 1 dim: 2 dim: 7 dim: 13 } } }
layer { name: "shrink" type: "Interp" bottom: "odd" top: "shrink" interp_param { shrink_factor: 2 } }
layer { name: "sz" type: "Interp" bottom: "odd" top: "sz" interp_param { shrink_factor: 2 zoom_factor: 2 } }
"""
    wt, bt, w2, bias = rnd(rng, 60, 7), rnd(rng, 7), rnd(rng, 6, 20), rnd(rng, 3)
    proto, model = write_net(tmp_path, text, {"ipt": [wt, bt], "ip2": [w2], "b": [bias]})
    x, odd = rnd(rng, 2, 3, 4, 5), rnd(rng, 1, 2, 7, 13)
    outs = load_caffe(proto, model).run_flat(torch.from_numpy(x), torch.from_numpy(odd))
    up, up2, ipt, ip2, cat, b, pf, shrink, sz = (t.numpy() for t in outs)
    np.testing.assert_array_equal(up, x.repeat(2, axis=2).repeat(2, axis=3))
    np.testing.assert_array_equal(up2, x.repeat(3, axis=2))
    np.testing.assert_allclose(ipt, x.reshape(2, 60) @ wt + bt, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ip2, x.reshape(2, 3, 20) @ w2.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(cat, np.concatenate([x[..., 2:], x[..., :2]], axis=3))
    np.testing.assert_array_equal(b, x + bias.reshape(1, 3, 1, 1))
    np.testing.assert_array_equal(pf, x[:, :, :4, :4].reshape(2, 3, 2, 2, 2, 2).max(axis=(3, 5)))
    # Interp with aligned corners: shrink 2 of 7x13 samples every other pixel; shrink 2 then zoom 2 is 7x13 again
    np.testing.assert_allclose(shrink, odd[:, :, ::2, ::2], atol=1e-6)
    np.testing.assert_allclose(sz, odd, atol=1e-6)


def test_legacy_v1_layers_and_input_dim(tmp_path):
    """V1 'layers' with enum types, net-level input/input_dim, V1 weights in the .caffemodel."""
    rng = np.random.default_rng(14)
    text = """name: "old"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "pool" type: POOLING bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "pool" top: "fc" inner_product_param { num_output: 5 } }
layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }
"""
    proto = tmp_path / "old.prototxt"
    proto.write_text(text)
    from torch_tpu.frontends.caffe import new_net
    from conftest_caffe import blob_proto

    model = new_net()
    conv = model.layers.add(name="conv", type=4)
    blob_proto(conv, rnd(rng, 4, 3, 3, 3))
    blob_proto(conv, rnd(rng, 4))
    fc = model.layers.add(name="fc", type=14)
    blob_proto(fc, rnd(rng, 5, 36))
    blob_proto(fc, rnd(rng, 5))
    path = tmp_path / "old.caffemodel"
    path.write_bytes(model.SerializeToString())
    top = load_caffe(proto, path)
    assert top.input_names == ["data"] and top.output_names == ["prob"]
    compare_with_opencv(top, proto, path, {"data": rnd(rng, 1, 3, 8, 8)})
    # input_shapes overrides the declared shape (another batch size); preprocess is kept in meta
    top2 = load_caffe(proto, path, input_shapes={"data": (3, 3, 8, 8)}, preprocess={"mean": [1, 2, 3]})
    assert top2.input_specs[0][0] == (3, 3, 8, 8) and top2.meta["preprocess"] == {"mean": [1, 2, 3]}
    compare_with_opencv(top2, proto, path, {"data": rnd(rng, 3, 3, 8, 8)})
