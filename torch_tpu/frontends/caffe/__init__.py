"""Caffe frontend: ``.prototxt`` + ``.caffemodel`` -> TOP graph.

* :mod:`~torch_tpu.frontends.caffe.schema` -- the caffe.proto subset, built at run time;
* :mod:`~torch_tpu.frontends.caffe.reader` -- parse files, upgrade V1 layers, attach weights;
* :mod:`~torch_tpu.frontends.caffe.converters` -- one module per layer family;
* :mod:`~torch_tpu.frontends.caffe.registry` -- layer type -> converter (:func:`supported_layers`);
* :mod:`~torch_tpu.frontends.caffe.builder` -- the torch module, and the naming rules;
* :mod:`~torch_tpu.frontends.caffe.loader` -- :func:`load_caffe`.
"""

from torch_tpu.frontends.caffe.loader import load_caffe
from torch_tpu.frontends.caffe.reader import read_caffemodel, read_net, read_prototxt
from torch_tpu.frontends.caffe.registry import REGISTRY, support_table, supported_layers
from torch_tpu.frontends.caffe.schema import message_class, new_net

__all__ = ["REGISTRY", "load_caffe", "message_class", "new_net", "read_caffemodel", "read_net", "read_prototxt",
           "support_table", "supported_layers"]
