"""ONNX export and import of fusedrnn models (needs the optional ``onnx`` package:
``pip install "fusedrnn[onnx]"``)."""

from .load import OnnxModel, load  # noqa: E402,F401  (imports onnx only when load() is called)
