"""ONNX export and import of fusedrnn models (needs the optional ``onnx`` package:
``pip install "fusedrnn[onnx]"``).

    fusedrnn.onnx.export(model, "model.onnx")    # fusedrnn.LSTM/GRU/RNN or a Keras Sequential
    model = fusedrnn.onnx.load("model.onnx")      # runs LSTM/GRU/RNN graphs on fusedrnn's kernels

``import fusedrnn`` never imports onnx; the first use of ``export`` or ``load`` does.  The
implementation lives in private modules (_export.py, _export_keras.py, _load.py, _interp.py,
_recurrent.py), so that the names ``fusedrnn.onnx.export`` and ``.load`` always mean the
functions.
"""

from ._load import SUPPORTED_OPS, OnnxModel, load  # imports onnx only when load() is called

__all__ = ["export", "load", "OnnxModel", "SUPPORTED_OPS"]


def _require_onnx():
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise ImportError('fusedrnn.onnx needs the onnx package: pip install "fusedrnn[onnx]"') from exc


def export(model, path, *, opset=None, lengths=False, initial_state=False, check=True):
    """Write `model` to `path` as an ONNX file (atomically); returns the onnx.ModelProto.

    model: a fusedrnn.LSTM, GRU or RNN, or a built fusedrnn.keras Sequential.  opset: the ONNX
    opset, 14 or later (default 17).  For the LSTM/GRU/RNN layers, lengths=True adds the graph
    input ``lengths`` (batch,) int64 and initial_state=True the inputs ``h0`` (and ``c0``); a
    Keras model takes its lengths from its Masking or Embedding(mask_zero=True) layer.
    check: run onnx.checker (full_check) on the graph before writing it.  The batch and time
    axes are dynamic.  What ONNX cannot express (an LSTM's proj_size, stateful layers, ...)
    raises a ValueError naming the layer and the option.  Details: fusedrnn/onnx/_export.py.
    """
    _require_onnx()
    from ._export import export as _export

    kw = {} if opset is None else {"opset": opset}
    return _export(model, path, lengths=lengths, initial_state=initial_state, check=check, **kw)
