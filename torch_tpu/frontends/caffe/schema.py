"""The Caffe protobuf schema, built at run time (no generated ``caffe_pb2`` module is needed).

No ``caffe_pb2`` on PyPI works with protobuf >= 5, so the subset of ``caffe.proto`` the importer
reads is written here as data: one table row per field, with the field numbers of the public
``caffe.proto`` (BVLC master), turned into a ``FileDescriptorProto`` and then into message classes
with ``descriptor_pool`` + ``message_factory``. Text ``.prototxt`` files parse by field *name*, binary
``.caffemodel`` files by field *number*; fields a binary file has and this schema lacks are kept as
unknown fields and ignored.

Layer parameters that are not in BVLC's ``caffe.proto`` use these numbers (text files are unaffected):
``permute_param = 202`` (SSD's number), ``interp_param = 2210`` (PSPNet/DeepLab ``Interp``) and
``upsample_param = 2211`` (the YOLO/SegNet forks' ``Upsample``).

Example:
    >>> net = message_class("NetParameter")()
    >>> net.name = "tiny"; net.layer.add(name="data", type="Input").top.append("data")
    >>> len(net.SerializeToString()) > 0
    True
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "caffe"

# (name, number, type, label, default) -- label: "opt" | "rep" | "packed" (repeated, packed encoding);
# type: a scalar type name, or the name of a message / enum of this file.
_F = tuple
_ENUMS: dict[str, list[tuple[str, int]]] = {
    "Phase": [("TRAIN", 0), ("TEST", 1)],
    "FillerParameter.VarianceNorm": [("FAN_IN", 0), ("FAN_OUT", 1), ("AVERAGE", 2)],
    "ParamSpec.DimCheckMode": [("STRICT", 0), ("PERMISSIVE", 1)],
    "Engine": [("DEFAULT", 0), ("CAFFE", 1), ("CUDNN", 2)],
    "LossParameter.NormalizationMode": [("FULL", 0), ("VALID", 1), ("BATCH_SIZE", 2), ("NONE", 3)],
    "DataParameter.DB": [("LEVELDB", 0), ("LMDB", 1)],
    "EltwiseParameter.EltwiseOp": [("PROD", 0), ("SUM", 1), ("MAX", 2)],
    "LRNParameter.NormRegion": [("ACROSS_CHANNELS", 0), ("WITHIN_CHANNEL", 1)],
    "PoolingParameter.PoolMethod": [("MAX", 0), ("AVE", 1), ("STOCHASTIC", 2)],
    "PoolingParameter.RoundMode": [("CEIL", 0), ("FLOOR", 1)],
    "ReductionParameter.ReductionOp": [("SUM", 1), ("ASUM", 2), ("SUMSQ", 3), ("MEAN", 4)],
    "V1LayerParameter.LayerType": [
        ("NONE", 0), ("ABSVAL", 35), ("ACCURACY", 1), ("ARGMAX", 30), ("BNLL", 2), ("CONCAT", 3),
        ("CONTRASTIVE_LOSS", 37), ("CONVOLUTION", 4), ("DATA", 5), ("DECONVOLUTION", 39), ("DROPOUT", 6),
        ("DUMMY_DATA", 32), ("EUCLIDEAN_LOSS", 7), ("ELTWISE", 25), ("EXP", 38), ("FLATTEN", 8),
        ("HDF5_DATA", 9), ("HDF5_OUTPUT", 10), ("HINGE_LOSS", 28), ("IM2COL", 11), ("IMAGE_DATA", 12),
        ("INFOGAIN_LOSS", 13), ("INNER_PRODUCT", 14), ("LRN", 15), ("MEMORY_DATA", 29),
        ("MULTINOMIAL_LOGISTIC_LOSS", 16), ("MVN", 34), ("POOLING", 17), ("POWER", 26), ("RELU", 18),
        ("SIGMOID", 19), ("SIGMOID_CROSS_ENTROPY_LOSS", 27), ("SILENCE", 36), ("SOFTMAX", 20),
        ("SOFTMAX_LOSS", 21), ("SPLIT", 22), ("SLICE", 33), ("TANH", 23), ("WINDOW_DATA", 24),
        ("THRESHOLD", 31)],
}

_MESSAGES: dict[str, list[tuple]] = {
    "BlobShape": [_F(("dim", 1, "int64", "packed", None))],
    "BlobProto": [
        ("shape", 7, "BlobShape", "opt", None), ("data", 5, "float", "packed", None),
        ("diff", 6, "float", "packed", None), ("double_data", 8, "double", "packed", None),
        ("double_diff", 9, "double", "packed", None), ("num", 1, "int32", "opt", "0"),
        ("channels", 2, "int32", "opt", "0"), ("height", 3, "int32", "opt", "0"), ("width", 4, "int32", "opt", "0")],
    "BlobProtoVector": [("blobs", 1, "BlobProto", "rep", None)],
    "FillerParameter": [
        ("type", 1, "string", "opt", "constant"), ("value", 2, "float", "opt", "0"), ("min", 3, "float", "opt", "0"),
        ("max", 4, "float", "opt", "1"), ("mean", 5, "float", "opt", "0"), ("std", 6, "float", "opt", "1"),
        ("sparse", 7, "int32", "opt", "-1"), ("variance_norm", 8, "FillerParameter.VarianceNorm", "opt", "FAN_IN")],
    "NetParameter": [
        ("name", 1, "string", "opt", None), ("input", 3, "string", "rep", None),
        ("input_shape", 8, "BlobShape", "rep", None), ("input_dim", 4, "int32", "rep", None),
        ("force_backward", 5, "bool", "opt", "false"), ("state", 6, "NetState", "opt", None),
        ("debug_info", 7, "bool", "opt", "false"), ("layer", 100, "LayerParameter", "rep", None),
        ("layers", 2, "V1LayerParameter", "rep", None)],
    "NetState": [("phase", 1, "Phase", "opt", "TEST"), ("level", 2, "int32", "opt", "0"),
                 ("stage", 3, "string", "rep", None)],
    "NetStateRule": [("phase", 1, "Phase", "opt", None), ("min_level", 2, "int32", "opt", None),
                     ("max_level", 3, "int32", "opt", None), ("stage", 4, "string", "rep", None),
                     ("not_stage", 5, "string", "rep", None)],
    "ParamSpec": [("name", 1, "string", "opt", None), ("share_mode", 2, "ParamSpec.DimCheckMode", "opt", None),
                  ("lr_mult", 3, "float", "opt", "1"), ("decay_mult", 4, "float", "opt", "1")],
    "LayerParameter": [
        ("name", 1, "string", "opt", None), ("type", 2, "string", "opt", None), ("bottom", 3, "string", "rep", None),
        ("top", 4, "string", "rep", None), ("phase", 10, "Phase", "opt", None),
        ("loss_weight", 5, "float", "rep", None), ("param", 6, "ParamSpec", "rep", None),
        ("blobs", 7, "BlobProto", "rep", None), ("propagate_down", 11, "bool", "rep", None),
        ("include", 8, "NetStateRule", "rep", None), ("exclude", 9, "NetStateRule", "rep", None),
        ("transform_param", 100, "TransformationParameter", "opt", None),
        ("loss_param", 101, "LossParameter", "opt", None),
        ("accuracy_param", 102, "AccuracyParameter", "opt", None),
        ("argmax_param", 103, "ArgMaxParameter", "opt", None),
        ("batch_norm_param", 139, "BatchNormParameter", "opt", None),
        ("bias_param", 141, "BiasParameter", "opt", None),
        ("clip_param", 148, "ClipParameter", "opt", None),
        ("concat_param", 104, "ConcatParameter", "opt", None),
        ("convolution_param", 106, "ConvolutionParameter", "opt", None),
        ("crop_param", 144, "CropParameter", "opt", None),
        ("data_param", 107, "DataParameter", "opt", None),
        ("dropout_param", 108, "DropoutParameter", "opt", None),
        ("eltwise_param", 110, "EltwiseParameter", "opt", None),
        ("elu_param", 140, "ELUParameter", "opt", None),
        ("exp_param", 111, "ExpParameter", "opt", None),
        ("flatten_param", 135, "FlattenParameter", "opt", None),
        ("inner_product_param", 117, "InnerProductParameter", "opt", None),
        ("input_param", 143, "InputParameter", "opt", None),
        ("log_param", 134, "LogParameter", "opt", None),
        ("lrn_param", 118, "LRNParameter", "opt", None),
        ("mvn_param", 120, "MVNParameter", "opt", None),
        ("pooling_param", 121, "PoolingParameter", "opt", None),
        ("power_param", 122, "PowerParameter", "opt", None),
        ("prelu_param", 131, "PReLUParameter", "opt", None),
        ("python_param", 130, "PythonParameter", "opt", None),
        ("reduction_param", 136, "ReductionParameter", "opt", None),
        ("relu_param", 123, "ReLUParameter", "opt", None),
        ("reshape_param", 133, "ReshapeParameter", "opt", None),
        ("scale_param", 142, "ScaleParameter", "opt", None),
        ("sigmoid_param", 124, "SigmoidParameter", "opt", None),
        ("softmax_param", 125, "SoftmaxParameter", "opt", None),
        ("slice_param", 126, "SliceParameter", "opt", None),
        ("swish_param", 147, "SwishParameter", "opt", None),
        ("tanh_param", 127, "TanHParameter", "opt", None),
        ("threshold_param", 128, "ThresholdParameter", "opt", None),
        ("tile_param", 138, "TileParameter", "opt", None),
        ("permute_param", 202, "PermuteParameter", "opt", None),
        ("interp_param", 2210, "InterpParameter", "opt", None),
        ("upsample_param", 2211, "UpsampleParameter", "opt", None)],
    "TransformationParameter": [
        ("scale", 1, "float", "opt", "1"), ("mirror", 2, "bool", "opt", "false"), ("crop_size", 3, "uint32", "opt", "0"),
        ("mean_file", 4, "string", "opt", None), ("mean_value", 5, "float", "rep", None),
        ("force_color", 6, "bool", "opt", "false"), ("force_gray", 7, "bool", "opt", "false")],
    "LossParameter": [("ignore_label", 1, "int32", "opt", None),
                      ("normalization", 3, "LossParameter.NormalizationMode", "opt", "VALID"),
                      ("normalize", 2, "bool", "opt", None)],
    "AccuracyParameter": [("top_k", 1, "uint32", "opt", "1"), ("axis", 2, "int32", "opt", "1"),
                          ("ignore_label", 3, "int32", "opt", None)],
    "ArgMaxParameter": [("out_max_val", 1, "bool", "opt", "false"), ("top_k", 2, "uint32", "opt", "1"),
                        ("axis", 3, "int32", "opt", None)],
    "BatchNormParameter": [("use_global_stats", 1, "bool", "opt", None),
                           ("moving_average_fraction", 2, "float", "opt", "0.999"),
                           ("eps", 3, "float", "opt", "1e-5")],
    "BiasParameter": [("axis", 1, "int32", "opt", "1"), ("num_axes", 2, "int32", "opt", "1"),
                      ("filler", 3, "FillerParameter", "opt", None)],
    "ClipParameter": [("min", 1, "float", "opt", None), ("max", 2, "float", "opt", None)],
    "ConcatParameter": [("axis", 2, "int32", "opt", "1"), ("concat_dim", 1, "uint32", "opt", "1")],
    "ConvolutionParameter": [
        ("num_output", 1, "uint32", "opt", None), ("bias_term", 2, "bool", "opt", "true"),
        ("pad", 3, "uint32", "rep", None), ("kernel_size", 4, "uint32", "rep", None),
        ("stride", 6, "uint32", "rep", None), ("dilation", 18, "uint32", "rep", None),
        ("pad_h", 9, "uint32", "opt", "0"), ("pad_w", 10, "uint32", "opt", "0"),
        ("kernel_h", 11, "uint32", "opt", None), ("kernel_w", 12, "uint32", "opt", None),
        ("stride_h", 13, "uint32", "opt", None), ("stride_w", 14, "uint32", "opt", None),
        ("group", 5, "uint32", "opt", "1"), ("weight_filler", 7, "FillerParameter", "opt", None),
        ("bias_filler", 8, "FillerParameter", "opt", None), ("engine", 15, "Engine", "opt", "DEFAULT"),
        ("axis", 16, "int32", "opt", "1"), ("force_nd_im2col", 17, "bool", "opt", "false")],
    "CropParameter": [("axis", 1, "int32", "opt", "2"), ("offset", 2, "uint32", "rep", None)],
    "DataParameter": [
        ("source", 1, "string", "opt", None), ("batch_size", 4, "uint32", "opt", None),
        ("rand_skip", 7, "uint32", "opt", "0"), ("backend", 8, "DataParameter.DB", "opt", "LEVELDB"),
        ("scale", 2, "float", "opt", "1"), ("mean_file", 3, "string", "opt", None),
        ("crop_size", 5, "uint32", "opt", "0"), ("mirror", 6, "bool", "opt", "false"),
        ("force_encoded_color", 9, "bool", "opt", "false"), ("prefetch", 10, "uint32", "opt", "4")],
    "DropoutParameter": [("dropout_ratio", 1, "float", "opt", "0.5"), ("scale_train", 2, "bool", "opt", "true")],
    "EltwiseParameter": [("operation", 1, "EltwiseParameter.EltwiseOp", "opt", "SUM"),
                         ("coeff", 2, "float", "rep", None), ("stable_prod_grad", 3, "bool", "opt", "true")],
    "ELUParameter": [("alpha", 1, "float", "opt", "1")],
    "ExpParameter": [("base", 1, "float", "opt", "-1"), ("scale", 2, "float", "opt", "1"),
                     ("shift", 3, "float", "opt", "0")],
    "FlattenParameter": [("axis", 1, "int32", "opt", "1"), ("end_axis", 2, "int32", "opt", "-1")],
    "InnerProductParameter": [
        ("num_output", 1, "uint32", "opt", None), ("bias_term", 2, "bool", "opt", "true"),
        ("weight_filler", 3, "FillerParameter", "opt", None), ("bias_filler", 4, "FillerParameter", "opt", None),
        ("axis", 5, "int32", "opt", "1"), ("transpose", 6, "bool", "opt", "false")],
    "InputParameter": [("shape", 1, "BlobShape", "rep", None)],
    "LogParameter": [("base", 1, "float", "opt", "-1"), ("scale", 2, "float", "opt", "1"),
                     ("shift", 3, "float", "opt", "0")],
    "LRNParameter": [
        ("local_size", 1, "uint32", "opt", "5"), ("alpha", 2, "float", "opt", "1"), ("beta", 3, "float", "opt", "0.75"),
        ("norm_region", 4, "LRNParameter.NormRegion", "opt", "ACROSS_CHANNELS"), ("k", 5, "float", "opt", "1"),
        ("engine", 6, "Engine", "opt", "DEFAULT")],
    "MVNParameter": [("normalize_variance", 1, "bool", "opt", "true"), ("across_channels", 2, "bool", "opt", "false"),
                     ("eps", 3, "float", "opt", "1e-9")],
    "PermuteParameter": [("order", 1, "uint32", "rep", None)],
    "PoolingParameter": [
        ("pool", 1, "PoolingParameter.PoolMethod", "opt", "MAX"), ("pad", 4, "uint32", "opt", "0"),
        ("pad_h", 9, "uint32", "opt", "0"), ("pad_w", 10, "uint32", "opt", "0"),
        ("kernel_size", 2, "uint32", "opt", None), ("kernel_h", 5, "uint32", "opt", None),
        ("kernel_w", 6, "uint32", "opt", None), ("stride", 3, "uint32", "opt", "1"),
        ("stride_h", 7, "uint32", "opt", None), ("stride_w", 8, "uint32", "opt", None),
        ("engine", 11, "Engine", "opt", "DEFAULT"), ("global_pooling", 12, "bool", "opt", "false"),
        ("round_mode", 13, "PoolingParameter.RoundMode", "opt", "CEIL")],
    "PowerParameter": [("power", 1, "float", "opt", "1"), ("scale", 2, "float", "opt", "1"),
                       ("shift", 3, "float", "opt", "0")],
    "PReLUParameter": [("filler", 1, "FillerParameter", "opt", None), ("channel_shared", 2, "bool", "opt", "false")],
    "PythonParameter": [("module", 1, "string", "opt", None), ("layer", 2, "string", "opt", None),
                        ("param_str", 3, "string", "opt", ""), ("share_in_parallel", 4, "bool", "opt", "false")],
    "ReductionParameter": [("operation", 1, "ReductionParameter.ReductionOp", "opt", "SUM"),
                           ("axis", 2, "int32", "opt", "0"), ("coeff", 3, "float", "opt", "1")],
    "ReLUParameter": [("negative_slope", 1, "float", "opt", "0"), ("engine", 2, "Engine", "opt", "DEFAULT")],
    "ReshapeParameter": [("shape", 1, "BlobShape", "opt", None), ("axis", 2, "int32", "opt", "0"),
                         ("num_axes", 3, "int32", "opt", "-1")],
    "ScaleParameter": [
        ("axis", 1, "int32", "opt", "1"), ("num_axes", 2, "int32", "opt", "1"),
        ("filler", 3, "FillerParameter", "opt", None), ("bias_term", 4, "bool", "opt", "false"),
        ("bias_filler", 5, "FillerParameter", "opt", None)],
    "SigmoidParameter": [("engine", 1, "Engine", "opt", "DEFAULT")],
    "SoftmaxParameter": [("engine", 1, "Engine", "opt", "DEFAULT"), ("axis", 2, "int32", "opt", "1")],
    "SliceParameter": [("axis", 3, "int32", "opt", "1"), ("slice_point", 2, "uint32", "rep", None),
                       ("slice_dim", 1, "uint32", "opt", "1")],
    "SwishParameter": [("beta", 1, "float", "opt", "1")],
    "TanHParameter": [("engine", 1, "Engine", "opt", "DEFAULT")],
    "ThresholdParameter": [("threshold", 1, "float", "opt", "0")],
    "TileParameter": [("axis", 1, "int32", "opt", "1"), ("tiles", 2, "int32", "opt", None)],
    "InterpParameter": [
        ("height", 1, "int32", "opt", "0"), ("width", 2, "int32", "opt", "0"), ("zoom_factor", 3, "int32", "opt", "1"),
        ("shrink_factor", 4, "int32", "opt", "1"), ("pad_beg", 5, "int32", "opt", "0"),
        ("pad_end", 6, "int32", "opt", "0")],
    "UpsampleParameter": [
        ("scale", 1, "uint32", "opt", "2"), ("scale_h", 2, "uint32", "opt", None), ("scale_w", 3, "uint32", "opt", None),
        ("pad_out_h", 4, "bool", "opt", "false"), ("pad_out_w", 5, "bool", "opt", "false"),
        ("upsample_h", 6, "uint32", "opt", None), ("upsample_w", 7, "uint32", "opt", None)],
    "V1LayerParameter": [
        ("bottom", 2, "string", "rep", None), ("top", 3, "string", "rep", None), ("name", 4, "string", "opt", None),
        ("include", 32, "NetStateRule", "rep", None), ("exclude", 33, "NetStateRule", "rep", None),
        ("type", 5, "V1LayerParameter.LayerType", "opt", None), ("blobs", 6, "BlobProto", "rep", None),
        ("param", 1001, "string", "rep", None), ("blobs_lr", 7, "float", "rep", None),
        ("weight_decay", 8, "float", "rep", None), ("loss_weight", 35, "float", "rep", None),
        ("accuracy_param", 27, "AccuracyParameter", "opt", None),
        ("argmax_param", 23, "ArgMaxParameter", "opt", None),
        ("concat_param", 9, "ConcatParameter", "opt", None),
        ("convolution_param", 10, "ConvolutionParameter", "opt", None),
        ("data_param", 11, "DataParameter", "opt", None),
        ("dropout_param", 12, "DropoutParameter", "opt", None),
        ("eltwise_param", 24, "EltwiseParameter", "opt", None),
        ("exp_param", 41, "ExpParameter", "opt", None),
        ("inner_product_param", 17, "InnerProductParameter", "opt", None),
        ("lrn_param", 18, "LRNParameter", "opt", None),
        ("mvn_param", 34, "MVNParameter", "opt", None),
        ("pooling_param", 19, "PoolingParameter", "opt", None),
        ("power_param", 21, "PowerParameter", "opt", None),
        ("relu_param", 30, "ReLUParameter", "opt", None),
        ("sigmoid_param", 38, "SigmoidParameter", "opt", None),
        ("softmax_param", 39, "SoftmaxParameter", "opt", None),
        ("slice_param", 31, "SliceParameter", "opt", None),
        ("tanh_param", 37, "TanHParameter", "opt", None),
        ("threshold_param", 25, "ThresholdParameter", "opt", None),
        ("transform_param", 36, "TransformationParameter", "opt", None),
        ("loss_param", 42, "LossParameter", "opt", None)],
}

_SCALARS = {
    "double": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
    "float": descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT,
    "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "uint64": descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
    "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
    "uint32": descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
    "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
}


def _field(msg: descriptor_pb2.DescriptorProto, row: tuple) -> None:
    name, number, ftype, label, default = row
    f = msg.field.add(name=name, number=number)
    FD = descriptor_pb2.FieldDescriptorProto
    f.label = FD.LABEL_REPEATED if label in ("rep", "packed") else FD.LABEL_OPTIONAL
    if label == "packed":
        f.options.packed = True
    if ftype in _SCALARS:
        f.type = _SCALARS[ftype]
    elif ftype in _ENUMS:
        f.type = FD.TYPE_ENUM
        f.type_name = f".{PACKAGE}.{ftype}"
    elif ftype in _MESSAGES:
        f.type = FD.TYPE_MESSAGE
        f.type_name = f".{PACKAGE}.{ftype}"
    else:  # a typo in the tables above
        raise KeyError(f"caffe schema: field {name} has unknown type {ftype}")
    if default is not None:
        f.default_value = default


def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The ``caffe.proto`` subset as a ``FileDescriptorProto`` (proto2, package ``caffe``)."""
    fdp = descriptor_pb2.FileDescriptorProto(name="torch_tpu_caffe.proto", package=PACKAGE, syntax="proto2")
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}
    for name, rows in _MESSAGES.items():
        msg = fdp.message_type.add(name=name)
        messages[name] = msg
        for row in rows:
            _field(msg, row)
    for full, values in _ENUMS.items():
        parent, _, short = full.rpartition(".")
        owner = messages[parent].enum_type if parent else fdp.enum_type
        enum = owner.add(name=short)
        for vname, number in values:
            enum.value.add(name=vname, number=number)
    return fdp


@functools.lru_cache(maxsize=None)
def _classes() -> dict[str, Any]:
    pool = descriptor_pool.DescriptorPool()
    fd = pool.Add(file_descriptor())
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
            for name in _MESSAGES} | {"_file": fd}


def message_class(name: str) -> Any:
    """The message class ``caffe.<name>`` (``NetParameter``, ``LayerParameter``, ``BlobProto`` ...)."""
    classes = _classes()
    if name not in classes or name.startswith("_"):
        raise KeyError(f"caffe schema has no message {name!r} (known: {', '.join(sorted(_MESSAGES))})")
    return classes[name]


def new_net() -> Any:
    """An empty ``caffe.NetParameter``."""
    return message_class("NetParameter")()


def v1_type_names() -> dict[int, str]:
    """``V1LayerParameter.LayerType`` number -> V1 enum name (``CONVOLUTION`` ...)."""
    return {num: name for name, num in _ENUMS["V1LayerParameter.LayerType"]}
