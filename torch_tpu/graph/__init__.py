"""Graph utilities shared by every level: stable names, printing, metadata, the TOP graph object."""

from torch_tpu.graph.names import STABLE_NAME, inherit_name, set_stable_name, stable_name
from torch_tpu.graph.printer import format_graph, format_node
from torch_tpu.graph.meta import refresh_meta, run_named
from torch_tpu.graph.top import TopGraph, load_top

__all__ = ["STABLE_NAME", "TopGraph", "format_graph", "format_node", "inherit_name", "load_top",
           "refresh_meta", "run_named", "set_stable_name", "stable_name"]
