"""What `fusedrnn bench` measures: a case, its FLOP count, the named grids, and its inputs.

A case is one configuration (cell, B, T, I, H, layers, direction, dtype) in one mode:
``fwd`` (inference) or ``fwdbwd`` (a training step: forward, then backward with every
gradient).  Shapes follow docs/conventions.md; a stack of layers feeds each layer's output to
the next, and a bidirectional layer runs a forward and a reverse pass over the same input and
concatenates their outputs (the next layer's input is 2H wide), as torch.nn does.

This module knows nothing about how contenders run a case (contenders.py) or how they are
validated (validation.py) and timed (timing.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from .._checks import GATES

CELLS = ("lstm", "gru", "rnn")
MODES = ("fwd", "fwdbwd")
DTYPES = ("float32", "float64")

FLOPS_HELP = (
    "GFLOP/s counts 2*T*B*(I+H)*G*H flops per layer and direction for a forward pass "
    "(G = 4 for lstm, 3 for gru, 1 for rnn; I is 2H for layers after a bidirectional one, "
    "H for layers after a unidirectional one); fwdbwd counts 3x the forward flops "
    "(backward = two matrix products per forward one). Elementwise work is not counted."
)

# The float64 oracle of a validation runs the case itself when its cost (Case.oracle_cost) stays
# under this; above it, T is halved (down to 8 steps), then B (down to 4 rows).
VALIDATION_COST = 1e10
VALIDATION_MIN_T = 8
VALIDATION_MIN_B = 4


@dataclass(frozen=True)
class Case:
    cell: str
    B: int
    T: int
    I: int
    H: int
    layers: int = 1
    bidirectional: bool = False
    dtype: str = "float32"
    mode: str = "fwd"

    def __post_init__(self):
        if self.cell not in GATES:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name in ("B", "T", "I", "H", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def G(self) -> int:
        return GATES[self.cell]

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def layer_input(self, layer: int) -> int:
        """Input width of a layer: I for the first, D*H after it."""
        return self.I if layer == 0 else self.directions * self.H

    @property
    def forward_flops(self) -> int:
        return sum(self.directions * 2 * self.T * self.B * (self.layer_input(layer) + self.H) * self.G * self.H
                   for layer in range(self.layers))

    @property
    def flops(self) -> int:
        """Flops of one call in this case's mode (see FLOPS_HELP)."""
        return self.forward_flops * (3 if self.mode == "fwdbwd" else 1)

    @property
    def shape_label(self) -> str:
        text = f"{self.cell} B={self.B} T={self.T} I={self.I} H={self.H}"
        if self.layers > 1:
            text += f" L={self.layers}"
        if self.bidirectional:
            text += " bi"
        if self.dtype != "float32":
            text += " f64"
        return text

    @property
    def label(self) -> str:
        return f"{self.shape_label} {self.mode}"

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def oracle_cost(self) -> float:
        """Rough cost of the float64 reference on this case, in flops: its flops, plus 16 for
        every weight element it reads per step and pass (at small B the reference streams the
        weights from memory every step, and 8 bytes cost about as long as 16 flops)."""
        weights = sum(self.directions * self.G * self.H * (self.layer_input(layer) + self.H)
                      for layer in range(self.layers))
        passes = 3 if self.mode == "fwdbwd" else 1
        return self.flops + 16.0 * weights * self.T * passes

    def validation_case(self) -> "Case":
        """The size this case is validated at: itself when the oracle is cheap enough."""
        v = self
        floor_t, floor_b = min(self.T, VALIDATION_MIN_T), min(self.B, VALIDATION_MIN_B)
        while v.oracle_cost > VALIDATION_COST and v.T > floor_t:
            v = replace(v, T=max(floor_t, v.T // 2))
        while v.oracle_cost > VALIDATION_COST and v.B > floor_b:
            v = replace(v, B=max(floor_b, v.B // 2))
        return v


# ----------------------------------------------------------------------------
# grids
# ----------------------------------------------------------------------------

GRIDS = ("quick", "standard", "deepbench")

STANDARD_SIZES = ((1, 100, 128), (32, 100, 256), (64, 50, 512), (16, 50, 1024))  # (B, T, I=H)

# DeepBench (github.com/baidu-research/DeepBench, kernels/rnn_problems.h), input size = hidden
# size as there.  Training shapes are timed as fwdbwd, inference shapes (N = 1, 2, 4) as fwd.
DEEPBENCH_HELP = (
    "deepbench: the DeepBench RNN kernel shapes with I = H, float32 unless --dtype. "
    "Training (fwdbwd): rnn H 1760/2048/2560 x N 16/32/64/128 x T 50; lstm H 512/1024/2048 x "
    "N 16/32/64/128 x T 25 and H 256 x N 16/32/64 x T 150; gru H 1024/1536/2048/2560 x N 32/64 "
    "x T 50. Inference (fwd): the same H at N 1/2/4 with the same T. "
    "Cuts for a 2-core CPU: gru T is 50 instead of DeepBench's 187-1500 (one 1500-step "
    "H=2560 call is ~11 TFLOP forward+backward, minutes here; per-step cost and GFLOP/s do not "
    "depend on T); DeepBench's lstm H 1536 and 4096 shapes are left out; DeepBench's inference "
    "set has no vanilla rnn, the rnn training shapes are added at N 1/2/4; rnn is tanh (DeepBench "
    "leaves the nonlinearity to cuDNN)."
)

_DEEPBENCH = (  # (cell, hidden sizes, training batches, T)
    ("rnn", (1760, 2048, 2560), (16, 32, 64, 128), 50),
    ("lstm", (512, 1024, 2048), (16, 32, 64, 128), 25),
    ("lstm", (256,), (16, 32, 64), 150),
    ("gru", (1024, 1536, 2048, 2560), (32, 64), 50),
)
_DEEPBENCH_INFERENCE_BATCHES = (1, 2, 4)


def grid(name: str) -> list[Case]:
    """The cases of a named grid (float32, one layer, unidirectional)."""
    if name == "quick":
        cases = [Case(cell, 16, 20, 64, 64, mode=mode) for cell in CELLS for mode in MODES]
        cases.append(Case("lstm", 4, 10, 32, 32, layers=2, bidirectional=True, mode="fwdbwd"))
        return cases
    if name == "standard":
        return [Case(cell, B, T, H, H, mode=mode)
                for cell in CELLS for (B, T, H) in STANDARD_SIZES for mode in MODES]
    if name == "deepbench":
        train = [Case(cell, B, T, H, H, mode="fwdbwd")
                 for cell, hs, bs, T in _DEEPBENCH for H in hs for B in bs]
        infer = [Case(cell, B, T, H, H, mode="fwd")
                 for cell, hs, _, T in _DEEPBENCH for H in hs for B in _DEEPBENCH_INFERENCE_BATCHES]
        return train + infer
    raise ValueError(f"grid must be one of {', '.join(GRIDS)}, got {name!r}")


# ----------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------

@dataclass
class Inputs:
    """The arrays every contender of a case receives.

    x (T, B, I); params[layer][direction] a dict of w_ih (G*H, I_l), w_hh (G*H, H), b_ih and
    b_hh (G*H,); h0 and c0 (layers*D, B, H), row layer*D + direction as torch; dout
    (T, B, D*H), the gradient arriving at the top layer's output (fwdbwd only).
    """

    x: np.ndarray
    params: list
    h0: np.ndarray
    c0: np.ndarray | None
    dout: np.ndarray | None

    def astype(self, dtype) -> "Inputs":
        """A copy in another dtype (the float64 oracle reads the same values)."""
        cast = lambda a: None if a is None else a.astype(dtype)  # noqa: E731
        params = [[{k: cast(v) for k, v in p.items()} for p in layer] for layer in self.params]
        return Inputs(cast(self.x), params, cast(self.h0), cast(self.c0), cast(self.dout))


def make_inputs(case: Case, seed: int) -> Inputs:
    """Seeded inputs: x, states and dout standard normal, weights uniform(-k, k), k = 1/sqrt(H)."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(case.dtype)
    k = 1.0 / np.sqrt(case.H)
    D, G, H = case.directions, case.G, case.H

    def normal(*shape):
        return rng.standard_normal(shape, dtype=dt)

    def uniform(*shape):
        return (rng.random(shape, dtype=dt) * (2 * k) - k).astype(dt, copy=False)

    x = normal(case.T, case.B, case.I)
    params = [[dict(w_ih=uniform(G * H, case.layer_input(layer)), w_hh=uniform(G * H, H),
                    b_ih=uniform(G * H), b_hh=uniform(G * H)) for _ in range(D)]
              for layer in range(case.layers)]
    h0 = normal(case.layers * D, case.B, H)
    c0 = normal(case.layers * D, case.B, H) if case.cell == "lstm" else None
    dout = normal(case.T, case.B, D * H) if case.mode == "fwdbwd" else None
    return Inputs(x, params, h0, c0, dout)
