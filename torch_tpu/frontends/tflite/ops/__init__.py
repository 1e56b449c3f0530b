"""TFLite converters, one module per op family; each exposes a ``CONVERTERS`` table (see ``registry.py``)."""
