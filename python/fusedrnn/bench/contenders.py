"""How each contender of `fusedrnn bench` runs a case.

A contender is built for one case and its inputs.  ``run()`` is what gets timed: a forward in
``fwd`` mode (inference: ``training=False``, torch under ``inference_mode``), a forward plus a
backward with every gradient in ``fwdbwd`` mode.  ``results(run())`` turns what it returned
into named NumPy arrays for validation; it is never timed.

* fusedrnn: ``fusedrnn.ops``, one single-layer call per layer and direction.
* numpy: ``fusedrnn.reference`` through the same Python stacking code (it always keeps its
  cache, so its forward costs the same in both modes).
* fusedrnn-cuda: the same calls with ``device='cuda'``: weights, inputs, states and dout copied
  to the device once; each call is timed with CUDA events.  One layer in one direction keeps
  its results on the device, as torch-cuda does (copied back for validation, untimed); a
  stacked or bidirectional case joins the layers' outputs on the host, inside the timed call.
  On the emulated device (a FUSEDRNN_CUDA_EMULATION
  build) the times are the host emulation's and say nothing about a GPU.
* torch: ``torch.nn.LSTM/GRU/RNN`` with ``num_layers`` and ``bidirectional``, holding copies
  of the same weights; gradients with respect to the input, the initial states and every
  parameter.
* torch-cuda: the same torch.nn module, inputs, states and dout moved to torch's CUDA device
  once (cuDNN where torch picks it; float32 at full precision: cuDNN's RNN TF32 is switched
  off, as float32 products rounded to TF32 miss the float32 tolerance); each call is timed
  with a pair of ``torch.cuda.Event(enable_timing=True)`` on the current stream, and its
  results stay on the device (``results()`` copies them to the host for validation, untimed).
  ``torch_cuda_unavailable()`` says why it cannot run (torch missing, or
  ``torch.cuda.is_available()`` False); the CLI then reports it as unavailable.
* onnxruntime: the case's stack exported once with fusedrnn.onnx.export (to a temporary file,
  read back by an InferenceSession: CPU provider, intra_op_num_threads = the bench's threads,
  inter_op 1, sequential execution); inference only, so it runs in ``fwd`` mode on float32
  cases and is left out of the others (``excluded`` says why).

The names of the results: out (T, B, D*H), h_n and c_n (layers*D, B, H), dx, dh0, dc0, and
per layer and direction dw_ih_l0, dw_hh_l0, db_ih_l0, db_hh_l0 (suffix _reverse for the
reverse direction), as torch names its parameters.
"""

from __future__ import annotations

import numpy as np

from .. import ops, reference
from .cases import Case, Inputs

CONTENDERS = ("fusedrnn", "numpy", "torch", "fusedrnn-cuda", "torch-cuda", "onnxruntime")
_PARAMS = ("w_ih", "w_hh", "b_ih", "b_hh")


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def torch_cuda_unavailable() -> str | None:
    """Why the torch-cuda contender cannot run here, or None when it can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed (pip install torch, a build with CUDA)"
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            return f"torch.cuda.is_available() is False: torch {torch.__version__} is built without CUDA"
        return (f"torch.cuda.is_available() is False: torch {torch.__version__} (CUDA {torch.version.cuda}) "
                "finds no usable GPU or driver")
    return None


def _torch_cuda_precision(torch) -> str:
    """Make cuDNN's float32 RNNs run at full precision (no TF32); returns how it was set."""
    rnn = getattr(torch.backends.cudnn, "rnn", None)
    if rnn is not None and hasattr(rnn, "fp32_precision"):  # torch >= 2.9; never mix with allow_tf32
        rnn.fp32_precision = "ieee"
        return f"cudnn.rnn.fp32_precision={rnn.fp32_precision}"
    torch.backends.cudnn.allow_tf32 = False
    return "cudnn.allow_tf32=False"


def torch_cuda_info() -> dict:
    """The header entry of torch-cuda: availability (with the reason), versions, cuDNN, device."""
    reason = torch_cuda_unavailable()
    info = {"available": reason is None, "reason": reason}
    try:
        import torch
    except ImportError:
        return info

    cudnn = torch.backends.cudnn
    info.update(torch=torch.__version__, cuda=torch.version.cuda, cudnn_available=bool(cudnn.is_available()),
                cudnn_enabled=bool(cudnn.enabled), cudnn_version=cudnn.version() if cudnn.is_available() else None)
    if reason is None:
        info["device"] = torch.cuda.get_device_name()
        info["float32"] = _torch_cuda_precision(torch)
    return info


def onnxruntime_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


# Threads of the onnxruntime session (timing.set_threads sets it; None: fusedrnn's count).
_ORT_THREADS = {"n": None}


def set_onnxruntime_threads(n: int) -> None:
    _ORT_THREADS["n"] = int(n)


def excluded(name: str, case: Case) -> str | None:
    """Why contender `name` does not run `case`, or None when it does."""
    if name != "onnxruntime":
        return None
    if case.mode != "fwd":
        return "excluded: onnxruntime runs inference only (fwd mode)"
    if case.dtype != "float32":
        return "excluded: onnxruntime's CPU LSTM/GRU/RNN kernels are float32 only"
    return None


def make(name: str, case: Case, inputs: Inputs):
    """The contender `name` for a case."""
    if name == "fusedrnn":
        return _Stacked(ops, case, inputs, kernel_training=True)
    if name == "numpy":
        return _Stacked(reference, case, inputs, kernel_training=False)
    if name == "torch":
        return _Torch(case, inputs)
    if name == "fusedrnn-cuda":
        return _CudaStacked(case, inputs)
    if name == "torch-cuda":
        return _TorchCuda(case, inputs)
    if name == "onnxruntime":
        return _OnnxRuntime(case, inputs)
    raise ValueError(f"contender must be one of {', '.join(CONTENDERS)}, got {name!r}")


def _suffix(direction: int) -> str:
    return "_reverse" if direction else ""


class _Stacked:
    """Layers and directions of single-layer ops from `module` (fusedrnn.ops or the reference)."""

    def __init__(self, module, case: Case, inputs: Inputs, kernel_training: bool):
        self.case = case
        self.inputs = inputs
        self.forward_fn = getattr(module, f"{case.cell}_forward")
        self.backward_fn = getattr(module, f"{case.cell}_backward")
        # fusedrnn.ops takes training=; the reference has no such flag (it always caches)
        self.kernel_training = kernel_training

    def _forward(self, training: bool):
        case, inp = self.case, self.inputs
        D = case.directions
        x = inp.x
        h_n, c_n, caches = [], [], []
        for layer in range(case.layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                p = inp.params[layer][d]
                kw = {"reverse": bool(d)}
                if self.kernel_training:
                    kw["training"] = training
                if case.cell == "lstm":
                    out, h, c, cache = self.forward_fn(x, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"],
                                                       inp.h0[k], inp.c0[k], **kw)
                else:
                    out, h, cache = self.forward_fn(x, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"],
                                                    inp.h0[k], **kw)
                    c = None
                outs.append(out)
                h_n.append(h)
                c_n.append(c)
                caches.append(cache)
            x = outs[0] if D == 1 else np.concatenate(outs, axis=2)
        return x, h_n, c_n, caches

    def _backward(self, caches):
        case = self.case
        D, H = case.directions, case.H
        dout = self.inputs.dout
        grads, dh0, dc0 = {}, [None] * len(caches), [None] * len(caches)
        for layer in reversed(range(case.layers)):
            dx = None
            for d in range(D):
                k = layer * D + d
                g = self.backward_fn(caches[k], dout if D == 1 else dout[:, :, d * H:(d + 1) * H])
                dx = g["dx"] if dx is None else dx + g["dx"]
                dh0[k] = g["dh0"]
                dc0[k] = g.get("dc0")
                for name in _PARAMS:
                    grads[f"d{name}_l{layer}{_suffix(d)}"] = g[f"d{name}"]
            dout = dx  # the gradient reaching the layer below is this layer's dx
        grads["dx"] = dout
        grads["dh0"] = dh0
        grads["dc0"] = dc0
        return grads

    def run(self):
        if self.case.mode == "fwd":
            return self._forward(training=False)[:3], None
        out, h_n, c_n, caches = self._forward(training=True)
        return (out, h_n, c_n), self._backward(caches)

    def release(self):
        """Drop anything kept between calls (nothing here)."""

    def results(self, ret) -> dict:
        (out, h_n, c_n), grads = ret
        res = {"out": out, "h_n": np.stack(h_n)}
        if self.case.cell == "lstm":
            res["c_n"] = np.stack(c_n)
        if grads is not None:
            for name, value in grads.items():
                if name in ("dh0", "dc0"):
                    if self.case.cell == "lstm" or name == "dh0":
                        res[name] = np.stack(value)
                else:
                    res[name] = value
        return res


class _CudaOps:
    """fusedrnn's CUDA kernels under the forward/backward names _Stacked looks up.  With keep,
    results stay on the device (DeviceArrays), as torch-cuda's stay on torch's: the timed call
    is the device work alone, not the copies back to the host."""

    def __init__(self, keep: bool):
        self.keep = keep

    def __getattr__(self, name):
        from .. import cuda_ops

        cell, _, kind = name.partition("_")
        if kind == "forward":
            def forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0=None, *, reverse=False, training=False):
                out, h_n, c_n, cache = cuda_ops.forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, None, None,
                                                        reverse, "tanh", training, keep=self.keep)
                return (out, h_n, c_n, cache) if cell == "lstm" else (out, h_n, cache)
            return forward
        if kind == "backward":
            return lambda cache, dout: cuda_ops.backward(cell, cache, dout, None, None, keep=self.keep)
        raise AttributeError(name)


def _on_host(value):
    """value with every DeviceArray in it (tuples, lists, dicts) copied to a NumPy array."""
    if isinstance(value, (tuple, list)):
        return type(value)(_on_host(v) for v in value)
    if isinstance(value, dict):
        return {k: _on_host(v) for k, v in value.items()}
    return value.numpy() if hasattr(value, "numpy") and hasattr(value, "__cuda_array_interface__") else value


class _CudaStacked(_Stacked):
    """fusedrnn on the CUDA device; ``timed_run()`` measures a call with CUDA events.  Inputs,
    weights, states and dout are uploaded once.  A case of one layer and one direction keeps
    its results on the device (copied back for validation only, untimed); a stacked or
    bidirectional one joins its layers' outputs on the host, and that copying is timed too."""

    device_memory = True  # host peak memory says nothing about it

    def __init__(self, case: Case, inputs: Inputs):
        from .. import _core, _device

        _device.check_device("cuda")
        up = _core.DeviceArray.from_numpy
        keep = case.layers == 1 and case.directions == 1
        dev_params = [[{k: up(v) for k, v in p.items()} for p in per_layer] for per_layer in inputs.params]
        # States by row so that one device array per layer and direction exists.
        h0 = [up(np.ascontiguousarray(h)) for h in inputs.h0]
        c0 = None if inputs.c0 is None else [up(np.ascontiguousarray(c)) for c in inputs.c0]
        dout = up(inputs.dout) if keep and inputs.dout is not None else inputs.dout
        super().__init__(_CudaOps(keep), case, Inputs(up(inputs.x), dev_params, h0, c0, dout),
                         kernel_training=True)
        self._timer = _core.CudaTimer()

    def timed_run(self):
        """(seconds, result) of one run() between two CUDA events."""
        self._timer.begin()
        ret = self.run()
        return self._timer.end() * 1e-3, ret

    def results(self, ret) -> dict:
        return super().results(_on_host(ret))


class _Torch:
    """torch.nn holding copies of the case's weights, on torch device `device`."""

    device = "cpu"

    def __init__(self, case: Case, inputs: Inputs):
        import torch

        self.torch = torch
        self.case = case
        module_type = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[case.cell]
        kw = {"nonlinearity": "tanh"} if case.cell == "rnn" else {}
        dtype = torch.float32 if case.dtype == "float32" else torch.float64
        self.module = module_type(case.I, case.H, num_layers=case.layers, bias=True,
                                  bidirectional=case.bidirectional, dtype=dtype, **kw)
        with torch.no_grad():
            for layer, per_direction in enumerate(inputs.params):
                for d, p in enumerate(per_direction):
                    for name in _PARAMS:
                        weight_name = name.replace("w_", "weight_").replace("b_", "bias_")
                        target = getattr(self.module, f"{weight_name}_l{layer}{_suffix(d)}")
                        target.copy_(torch.from_numpy(p[name]))
        # On another device, .to() moves the weights and (cuDNN) flattens them into one buffer;
        # on the CPU it changes nothing, and the tensors below share the NumPy arrays' memory.
        self.module.to(self.device)
        training = case.mode == "fwdbwd"

        def tensor(a):
            return None if a is None else torch.from_numpy(a).to(self.device)

        self.x = tensor(inputs.x).requires_grad_(training)
        self.h0 = tensor(inputs.h0).requires_grad_(training)
        self.c0 = None if inputs.c0 is None else tensor(inputs.c0).requires_grad_(training)
        self.dout = tensor(inputs.dout)

    def _state(self):
        return self.h0 if self.c0 is None else (self.h0, self.c0)

    def release(self):
        self.module.zero_grad(set_to_none=True)
        for t in (self.x, self.h0, self.c0):
            if t is not None:
                t.grad = None

    def run(self):
        if self.case.mode == "fwd":
            with self.torch.inference_mode():
                return self.module(self.x, self._state())
        self.release()  # a training step starts from zero_grad(set_to_none=True)
        out, state = self.module(self.x, self._state())
        out.backward(self.dout)
        return out, state

    def results(self, ret) -> dict:
        """Named NumPy arrays (copied to the host when the module is on a device)."""
        def host(t):
            return t.detach().cpu().numpy()

        out, state = ret
        h_n, c_n = state if self.case.cell == "lstm" else (state, None)
        res = {"out": host(out), "h_n": host(h_n)}
        if c_n is not None:
            res["c_n"] = host(c_n)
        if self.case.mode == "fwdbwd":
            res["dx"] = host(self.x.grad)
            res["dh0"] = host(self.h0.grad)
            if self.c0 is not None:
                res["dc0"] = host(self.c0.grad)
            for name, param in self.module.named_parameters():
                # weight_ih_l0_reverse -> dw_ih_l0_reverse
                short = name.replace("weight_", "w_").replace("bias_", "b_")
                res["d" + short] = host(param.grad)
        return res


class _TorchEventTimer:
    """CudaTimer's begin()/end() (ms) with two torch.cuda.Event on the current stream."""

    def __init__(self, torch):
        self._cuda = torch.cuda
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def begin(self):
        self._start.record(self._cuda.current_stream())

    def end(self) -> float:
        self._end.record(self._cuda.current_stream())
        self._end.synchronize()
        return self._start.elapsed_time(self._end)


class _TorchCuda(_Torch):
    """torch.nn on torch's CUDA device (cuDNN); ``timed_run()`` measures a call with CUDA events.

    ``device`` and ``timer`` (called with the torch module, returns an object with begin() and
    end() -> ms) are class attributes so that the tests, which have no CUDA build of torch, can
    run this same code on device 'cpu' with a host timer; nothing else changes them.
    """

    device = "cuda"
    timer = _TorchEventTimer
    device_memory = True  # host peak memory says nothing about it

    def __init__(self, case: Case, inputs: Inputs):
        import torch

        if self.device == "cuda":
            _torch_cuda_precision(torch)
        super().__init__(case, inputs)
        self._timer = self.timer(torch)
        if self.device == "cuda":
            torch.cuda.synchronize()  # the copies above are done before the first timed call

    def timed_run(self):
        """(seconds, result) of one run() between two CUDA events; results stay on the device."""
        self._timer.begin()
        ret = self.run()
        return self._timer.end() * 1e-3, ret


class _OnnxRuntime:
    """An onnxruntime session over the case's stack as fusedrnn.onnx.export writes it."""

    def __init__(self, case: Case, inputs: Inputs):
        import os
        import tempfile

        import onnxruntime as ort

        from .. import get_num_threads, layers
        from ..onnx import export

        reason = excluded("onnxruntime", case)
        if reason:
            raise ValueError(f"onnxruntime cannot run {case.label}: {reason}")
        self.case = case
        layer_type = {"lstm": layers.LSTM, "gru": layers.GRU, "rnn": layers.RNN}[case.cell]
        layer = layer_type(case.I, case.H, num_layers=case.layers, bidirectional=case.bidirectional,
                           dtype=case.dtype)
        state = {}
        for lay, per_direction in enumerate(inputs.params):
            for d, p in enumerate(per_direction):
                for name in _PARAMS:
                    full = name.replace("w_", "weight_").replace("b_", "bias_")
                    state[f"{full}_l{lay}{_suffix(d)}"] = p[name]
        layer.load_state_dict(state)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = _ORT_THREADS["n"] or get_num_threads()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "case.onnx")
            export(layer, path, initial_state=True)
            self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.feeds = {"input": inputs.x, "h0": np.ascontiguousarray(inputs.h0)}
        if case.cell == "lstm":
            self.feeds["c0"] = np.ascontiguousarray(inputs.c0)

    def release(self):
        """Nothing is kept between calls."""

    def run(self):
        return self.session.run(None, self.feeds)

    def results(self, ret) -> dict:
        names = ("out", "h_n", "c_n") if self.case.cell == "lstm" else ("out", "h_n")
        return dict(zip(names, ret))
