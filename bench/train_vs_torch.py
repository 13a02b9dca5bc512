"""Training throughput: a fusedrnn Sequential.fit loop against the same model trained by a plain
PyTorch CPU loop, on the same data, weights, batch size and thread count.

The model is example (a)'s: LSTM(I, H) (last step) -> Dense(H, 64, relu) -> Dropout(0.5) ->
Dense(64, C, softmax), Adam, cross-entropy.  Both sides start from the same weights (fusedrnn's
parameters carry torch's names and layouts); before timing, the losses of both on one batch in
inference mode must agree to 1e-4, else the case is not timed.

Timing: one warm-up epoch each, then --repeats epochs each, interleaved; the median epoch time
gives samples/s.  fusedrnn's epoch is model.fit(epochs=1, verbose=0) (shuffling, batching and
metric bookkeeping included); torch's is the usual loop: zero_grad, forward, loss, backward,
step, over shuffled batches.

    python bench/train_vs_torch.py                    # every preset, threads = all cores
    python bench/train_vs_torch.py --preset long --threads 1 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

import fusedrnn
from fusedrnn import LSTM, Dense, Dropout, Recurrent, Sequential, optimizers

# name: (samples N, steps T, features I, hidden H, classes C, batch B)
PRESETS = {
    "digits": (1344, 8, 8, 128, 10, 32),     # example (a) on scikit-learn digits
    "vowels": (270, 29, 12, 64, 9, 16),      # JapaneseVowels-sized
    "long": (1024, 100, 64, 256, 10, 64),    # longer sequences, larger layers
}


def build_fusedrnn(I, H, C, seed):
    model = Sequential([Recurrent(LSTM(I, H)), Dense(H, 64, "relu"), Dropout(0.5),
                        Dense(64, C, "softmax")], seed=seed)
    model.compile(optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return model


def build_torch(model, I, H, C):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(I, H, batch_first=True)
            self.fc1 = nn.Linear(H, 64)
            self.drop = nn.Dropout(0.5)
            self.fc2 = nn.Linear(64, C)

        def forward(self, x):
            _, (h, _) = self.lstm(x)
            return self.fc2(self.drop(torch.relu(self.fc1(h[-1]))))  # logits

    net = Net()
    rec, d1, _, d2 = model.layers
    with torch.no_grad():
        for name, p in rec.params.items():
            getattr(net.lstm, name).copy_(torch.from_numpy(p))
        for dense, lin in ((d1, net.fc1), (d2, net.fc2)):
            lin.weight.copy_(torch.from_numpy(dense.params["weight"]))
            lin.bias.copy_(torch.from_numpy(dense.params["bias"]))
    # torch's Adam with Keras' epsilon, the update fusedrnn.optimizers.Adam makes
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    return net, opt


def validate(model, net, x, y):
    import torch

    model_loss = model.evaluate(x, y, batch_size=len(x))
    net.eval()
    with torch.no_grad():
        torch_loss = float(torch.nn.functional.cross_entropy(net(torch.from_numpy(x)),
                                                             torch.from_numpy(y)))
    net.train()
    return model_loss, torch_loss


def torch_epoch(net, opt, xt, yt, batch, gen):
    import torch

    order = torch.randperm(len(xt), generator=gen)
    for i in range(0, len(xt), batch):
        idx = order[i:i + batch]
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
        loss.backward()
        opt.step()


def run_case(name, threads, repeats, seed):
    import torch

    N, T, I, H, C, B = PRESETS[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, T, I)).astype(np.float32)
    y = rng.integers(0, C, N)
    model = build_fusedrnn(I, H, C, seed)
    net, opt = build_torch(model, I, H, C)
    ours, theirs = validate(model, net, x[:256], y[:256])
    if abs(ours - theirs) > 1e-4 * max(1.0, abs(theirs)):
        print(f"{name}: VALIDATION FAILED: loss fusedrnn {ours:.6f} vs torch {theirs:.6f}; not timed")
        return None
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)

    def ours_epoch():
        model.fit(x, y, batch_size=B, epochs=1, verbose=0)

    def theirs_epoch():
        torch_epoch(net, opt, xt, yt, B, gen)

    ours_epoch()
    theirs_epoch()  # warm-up
    times = {"fusedrnn": [], "torch": []}
    for _ in range(repeats):
        for label, fn in (("fusedrnn", ours_epoch), ("torch", theirs_epoch)):
            t0 = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t0)
    rate = {k: N / statistics.median(v) for k, v in times.items()}
    return dict(preset=name, N=N, T=T, I=I, H=H, C=C, B=B, threads=threads,
                fusedrnn=rate["fusedrnn"], torch=rate["torch"], ratio=rate["fusedrnn"] / rate["torch"],
                loss_check=f"{ours:.6f}/{theirs:.6f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), action="append",
                   help="case to run (repeatable; default: all)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per side (default 3)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        sys.exit('this comparison needs PyTorch: pip install "fusedrnn[torch]"')
    fusedrnn.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"# fusedrnn {fusedrnn.__version__} ({fusedrnn.build_info()['isa']}), torch {torch.__version__}, "
          f"numpy {np.__version__}, python {platform.python_version()}")
    print(f"# {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()} "
          f"threads={args.threads} repeats={args.repeats} (median epoch)")
    print(f"{'preset':<8} {'N':>5} {'T':>4} {'I':>4} {'H':>4} {'B':>4} {'fusedrnn/s':>11} "
          f"{'torch/s':>9} {'ratio':>6}")
    rows = []
    for name in args.preset or list(PRESETS):
        r = run_case(name, args.threads, args.repeats, args.seed)
        if r is None:
            continue
        rows.append(r)
        print(f"{name:<8} {r['N']:>5} {r['T']:>4} {r['I']:>4} {r['H']:>4} {r['B']:>4} "
              f"{r['fusedrnn']:>11.0f} {r['torch']:>9.0f} {r['ratio']:>5.2f}x", flush=True)
    return rows


if __name__ == "__main__":
    main()
