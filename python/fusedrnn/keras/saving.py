"""Model files: one .npz archive (named .keras or .npz, as the caller chooses) with a JSON
header (layers, compile settings, epoch, random states) and the arrays (weights, optimiser
state), written atomically; and weight-only files for subclassed models.

HDF5 (.h5) is refused with a message: the file would not be one Keras could read anyway, and a
silent .npz under an .h5 name would only mislead.
"""

from __future__ import annotations

import os

import numpy as np

from .. import _npz
from .._files import path_str
from . import losses as _losses
from . import optimizers as _optimizers
from .._checks import shape_str
from . import pieces
from .pieces import LAYER_CLASSES

__all__ = ["save_model", "load_model", "save_weights", "load_weights", "file_class", "layer_class"]

_FILE_FORMAT = 1


def file_class(layer) -> str:
    """The name a layer's class is stored under: 'Dense' for the torch-ordered pieces,
    'keras.Dense' for the Keras layers."""
    return getattr(type(layer), "file_class", type(layer).__name__)


def layer_class(name):
    if name not in LAYER_CLASSES:
        raise ValueError(f"unknown layer class {name!r} in the model's config")
    return LAYER_CLASSES[name]


def check_path(filepath, overwrite):
    path = path_str(filepath, "filepath")
    if path.lower().endswith((".h5", ".hdf5")):
        raise ValueError(f"{path}: HDF5 files are not supported; save to a name ending in '.keras' "
                         "or '.npz' (fusedrnn's own format, loaded with load_model)")
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists and overwrite=False")
    return path


def check_built(model, doing: str) -> None:
    """ValueError unless every layer of the model has its weights (is built)."""
    if not all(layer.built for layer in model.layers):
        raise ValueError("the model is not built yet: give the first layer input_shape=, or run it "
                         f"on data (fit, predict) before {doing}")


def save_model(model, filepath, overwrite=True) -> None:
    path = check_path(filepath, overwrite)
    if not hasattr(model, "get_config"):
        raise ValueError(f"a subclassed Model ({type(model).__name__}) cannot be saved whole (its "
                         "call() is Python code); use save_weights, then rebuild it and load_weights")
    check_built(model, "saving")
    header = {"format": _FILE_FORMAT, "class": "Sequential", "config": model.get_config(),
              "epoch": model.epoch, "metadata": model.metadata,
              "rng": [g.bit_generator.state for g in _generators(model)]}
    arrays = {f"param.{k}": p for k, p, _ in model._trainable()}
    if model.loss is not None:
        iterations, state = model.optimizer.get_state()
        header["compile"] = {"optimizer": _optimizers.to_config(model.optimizer),
                             "loss": _losses.to_config(model.loss),
                             "metrics": list(model._metric_names),
                             "iterations": iterations}
        for slot, table in state.items():
            for k, a in table.items():
                arrays[f"opt.{slot}.{k}"] = a
    _npz.save(path, header, arrays)


def _generators(model):
    return [model.rng] + [layer.rng for layer in model.layers]


def load_model(filepath):
    """A Sequential rebuilt from save_model: weights, compiled state and random state restored.
    A file that is not one is a ValueError naming it; nothing is allocated before the header
    and the stored arrays are found to agree."""
    path = check_path(filepath, True)
    with _npz.reading(path):
        header, arrays = _npz.load(path, lambda h, specs: _check_file(path, h, specs))
        return _from_file(path, header, arrays)


def _from_file(path, header, arrays):
    from .models import Sequential

    model = Sequential.from_config(header["config"])
    for key, p, _ in model._trainable():
        np.copyto(p, arrays[f"param.{key}"])
    pieces.weights_changed(model.layers)
    generators = _generators(model)
    if not isinstance(header["rng"], list) or len(header["rng"]) != len(generators):
        raise ValueError(f"{path}: the header holds {len(header['rng'])} random states, the model "
                         f"has {len(generators)} generators")
    for g, state in zip(generators, header["rng"]):
        g.bit_generator.state = state
    model.epoch = int(header.get("epoch", 0))
    model.metadata = dict(header.get("metadata") or {})
    comp = header.get("compile")
    if comp:
        model.compile(_optimizers.from_config(comp["optimizer"]),
                      _losses.from_config(comp["loss"]), comp["metrics"])
        model.optimizer.set_state(*_optimizer_state(path, model, comp, arrays))
    return model


def _check_file(path, header, specs) -> None:
    """The header's layers against the stored arrays' shapes, before anything is built."""
    if header.get("class") != "Sequential" or header.get("format") != _FILE_FORMAT:
        raise ValueError(f"{path} does not hold a fusedrnn Sequential model (class "
                         f"{header.get('class')!r}, format {header.get('format')!r})")
    config = header.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise ValueError(f"{path}: the model's config must be a JSON object with a list of layers")

    def pairs():
        for i, layer in enumerate(config["layers"]):
            if not isinstance(layer, dict) or layer.get("class") not in LAYER_CLASSES \
                    or not isinstance(layer.get("config"), dict):
                raise ValueError(f"{path}: layer {i} of the config is not a known layer: {str(layer)[:80]}")
            for name, shape in LAYER_CLASSES[layer["class"]].param_shapes(layer["config"]):
                yield f"param.{i}.{name}", shape

    params = {k: v for k, v in specs.items() if k.startswith("param.")}
    expected = _npz.check_shapes(path, params, pairs(), "model config")
    for name, spec in specs.items():
        if name.startswith("param."):
            continue
        parts = name.split(".", 2)
        if len(parts) != 3 or parts[0] != "opt" or f"param.{parts[2]}" not in expected:
            raise ValueError(f"{path}: unexpected array {name!r}")
        if spec.shape != tuple(expected[f"param.{parts[2]}"]):
            raise ValueError(f"{path}: optimizer state {name!r} has shape {shape_str(spec.shape)}; its "
                             f"parameter has shape {shape_str(expected[f'param.{parts[2]}'])}")


def _optimizer_state(path, model, comp, arrays):
    """(iterations, state) of a saved optimiser, each array checked against its parameter: a
    moment of another shape or dtype would otherwise scramble the update silently."""
    iterations = comp["iterations"]
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"{path}: optimizer iterations must be an int >= 0, got {iterations!r}")
    params = {k: p for k, p, _ in model._trainable()}
    slots = model.optimizer._slots
    state = {}
    for name, a in arrays.items():
        if not name.startswith("opt."):
            continue
        parts = name.split(".", 2)
        if len(parts) != 3 or parts[1] not in slots or parts[2] not in params:
            raise ValueError(f"{path}: unexpected optimizer state {name!r} ({type(model.optimizer).__name__} "
                             f"keeps {list(slots) or 'nothing'} per parameter)")
        p = params[parts[2]]
        if a.shape != p.shape or a.dtype != p.dtype:
            raise ValueError(f"{path}: optimizer state {name!r} has shape {shape_str(a.shape)} and dtype "
                             f"{a.dtype}; its parameter has shape {shape_str(p.shape)} and dtype {p.dtype}")
        state.setdefault(parts[1], {})[parts[2]] = a
    return iterations, state


def save_weights(model, filepath, overwrite=True) -> None:
    """get_weights() in one .npz file ('w0', 'w1', ...), written atomically."""
    path = check_path(filepath, overwrite)
    weights = model.get_weights()
    _npz.save(path, {"format": _FILE_FORMAT, "class": "weights", "count": len(weights)},
              {f"w{i}": w for i, w in enumerate(weights)})


def load_weights(model, filepath) -> None:
    """set_weights from a save_weights file; the model must be built (run it on data first)."""
    path = check_path(filepath, True)
    check_built(model, "loading weights")
    expected = [w.shape for w in model.get_weights()]

    def check(header, specs):
        if header.get("class") != "weights" or header.get("count") != len(specs):
            raise ValueError(f"{path} does not hold weights written by save_weights")
        if len(specs) != len(expected):
            raise ValueError(f"{path} holds {len(specs)} arrays; the model has {len(expected)} "
                             "(build it on data first)")

    with _npz.reading(path):
        _, arrays = _npz.load(path, check)
    model.set_weights([arrays[f"w{i}"] for i in range(len(expected))])
