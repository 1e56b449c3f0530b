"""Bad Caffe input gives a clear torch_tpu error naming the file, the layer and its type."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest_caffe import write_net
from torch_tpu.errors import ModelFormatError, TorchTpuError, UnsupportedOpError
from torch_tpu.frontends.caffe import REGISTRY, load_caffe, read_caffemodel, supported_layers
from torch_tpu.frontends.caffe.registry import LayerRegistry

TINY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 3 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 2 } }
"""


def tiny_weights():
    rng = np.random.default_rng(0)
    f = np.float32
    return {"conv": [rng.standard_normal((3, 2, 3, 3)).astype(f), rng.standard_normal(3).astype(f)],
            "fc": [rng.standard_normal((2, 12)).astype(f), rng.standard_normal(2).astype(f)]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_net(tmp_path_factory.mktemp("tiny"), TINY, tiny_weights(), name="tiny")


def test_truncated_and_garbage_caffemodel(tiny, tmp_path):
    proto, model = tiny
    data = model.read_bytes()
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(data[:-7])
    with pytest.raises(ModelFormatError, match="cut.caffemodel.*truncated or corrupt"):
        load_caffe(proto, cut)
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01" * 3)
    with pytest.raises(ModelFormatError, match="junk.caffemodel"):
        read_caffemodel(junk)
    with pytest.raises(ModelFormatError, match="no such|cannot read"):
        load_caffe(proto, tmp_path / "missing.caffemodel")


def test_prototxt_syntax_error_names_line(tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer { name: "data" type: "Input" top: "data" }\nlayer { name: "c" type: \n')
    with pytest.raises(ModelFormatError, match=r"bad\.prototxt.*line 4"):
        load_caffe(bad)
    unknown_field = tmp_path / "field.prototxt"
    unknown_field.write_text('name: "x"\n\nlayer { name: "p" type: "ReLU" frobnicate: 3 }\n')
    with pytest.raises(ModelFormatError, match=r"line 3.*frobnicate"):
        load_caffe(unknown_field)


def test_unknown_layer_type(tmp_path):
    text = TINY + 'layer { name: "weird" type: "Frobnicate" bottom: "fc" top: "out" }\n'
    proto, model = write_net(tmp_path, text, tiny_weights())
    with pytest.raises(UnsupportedOpError) as e:
        load_caffe(proto, model)
    msg = str(e.value)
    assert "Frobnicate" in msg and "'weird'" in msg and str(proto) in msg and e.value.where == "caffe"


def test_blob_shape_mismatch_and_missing_weights(tmp_path):
    w = tiny_weights()
    w["conv"][0] = w["conv"][0][:, :1]
    proto, model = write_net(tmp_path, TINY, w)
    with pytest.raises(ModelFormatError) as e:
        load_caffe(proto, model)
    assert e.value.node == "conv" and e.value.op == "Convolution" and e.value.path == str(model)
    assert "blob 0 has shape [3, 1, 3, 3], expected [3, 2, 3, 3]" in str(e.value)
    with pytest.raises(ModelFormatError, match="conv.*Convolution.*no .caffemodel was given"):
        load_caffe(proto)


def test_stored_count_disagrees_with_declared_shape(tmp_path):
    from torch_tpu.frontends.caffe import new_net

    proto, model = write_net(tmp_path, TINY, tiny_weights())
    net = new_net()
    net.ParseFromString(model.read_bytes())
    net.layer[1].blobs[0].shape.dim[0] = 4
    model.write_bytes(net.SerializeToString())
    with pytest.raises(ModelFormatError, match=r"node 'conv', op Convolution: blob 0 declares shape \[4, 2, 3, 3\]"):
        load_caffe(proto, model)


@pytest.mark.parametrize("layer,error,match", [
    ('layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { pool: STOCHASTIC kernel_size: 2 } }',
     UnsupportedOpError, "STOCHASTIC"),
    ('layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param { use_global_stats: false } }',
     UnsupportedOpError, "use_global_stats"),
    ('layer { name: "e" type: "Eltwise" bottom: "data" bottom: "data" top: "e" eltwise_param { operation: MAX coeff: 1 coeff: 2 } }',
     ModelFormatError, "coeff is only allowed for SUM"),
    ('layer { name: "r" type: "ReLU" bottom: "nothing" top: "r" }', ModelFormatError, "bottom 'nothing' is not produced"),
    ('layer { name: "s" type: "Slice" bottom: "data" top: "a" top: "b" top: "c" slice_param { axis: 1 } }',
     ModelFormatError, "cannot be split into 3 equal parts"),
])
def test_bad_parameters(tmp_path, layer, error, match):
    text = 'name: "t"\nlayer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }\n'
    proto, model = write_net(tmp_path, text + layer + "\n")
    with pytest.raises(error, match=match):
        load_caffe(proto, model)


def test_registry_refuses_duplicates_and_lists_support():
    r = LayerRegistry()
    r.add("ReLU", REGISTRY.entries()[0].convert, "")
    with pytest.raises(ValueError, match="already registered"):
        r.add("ReLU", REGISTRY.entries()[0].convert, "")
    table = dict(supported_layers())
    for t in ("Input", "Convolution", "Deconvolution", "InnerProduct", "BatchNorm", "Scale", "Bias", "ReLU",
              "PReLU", "Sigmoid", "TanH", "Pooling", "Eltwise", "Concat", "Softmax", "Flatten", "Reshape",
              "Permute", "Dropout", "Upsample", "Interp", "Slice", "Power", "Crop"):
        assert t in table, t


@settings(max_examples=10, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_caffemodel_raises_only_torch_tpu_errors(tiny, tmp_path, data):
    proto, model = tiny
    raw = bytearray(model.read_bytes())
    n = data.draw(st.integers(1, 3), label="mutations")
    for _ in range(n):
        pos = data.draw(st.integers(0, len(raw) - 1), label="pos")
        raw[pos] = data.draw(st.integers(0, 255), label="byte")
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[:data.draw(st.integers(0, len(raw)), label="length")]
    bad = tmp_path / "mutated.caffemodel"
    bad.write_bytes(bytes(raw))
    try:
        top = load_caffe(proto, bad)
    except TorchTpuError:
        return
    assert top.output_names == ["fc"]
