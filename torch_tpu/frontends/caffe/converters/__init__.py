"""Layer converters, one module per layer family; registered in :mod:`torch_tpu.frontends.caffe.registry`."""
