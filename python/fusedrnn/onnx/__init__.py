"""ONNX export and import of fusedrnn models (needs the optional ``onnx`` package:
``pip install "fusedrnn[onnx]"``)."""
