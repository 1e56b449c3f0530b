"""Source formats -> TOP graph. Each frontend returns a :class:`torch_tpu.graph.TopGraph`."""

from torch_tpu.frontends.torch_frontend import capture_dynamo, capture_frozen, capture_module, freeze_dynamo_params

__all__ = ["capture_dynamo", "capture_frozen", "capture_module", "freeze_dynamo_params"]
