"""Short whole-sequence calls in eval mode: the packed weights kept between calls against
packing them on every call (the same layer, weights_changed() before each timed call forces the
repack), same thread count, medians of interleaved repetitions.

    python bench/short_calls.py [--threads N] [--repeats R]
"""

import argparse
import os
import platform
import time

import numpy as np

import fusedrnn


def median_us(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    fusedrnn.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, isa {fusedrnn._core.isa()}, "
          f"threads {args.threads}, load {os.getloadavg()[0]:.1f}")
    print(f"{'cell':5} {'H':>4} {'T':>3} {'B':>3} {'kept (us)':>10} {'repacked (us)':>14} {'ratio':>6}")
    rng = np.random.default_rng(0)
    for cell in ("lstm", "gru", "rnn"):
        for H in (128, 256, 512):
            for T, B in ((1, 1), (10, 1), (10, 8)):
                layer = getattr(fusedrnn, cell.upper())(H, H, seed=1).eval()
                x = rng.standard_normal((T, B, H)).astype(np.float32)

                def repack():
                    layer.weights_changed()
                    layer(x)
                for _ in range(10):
                    layer(x)
                    repack()
                kept, fresh = [], []
                for _ in range(5):  # interleaved, so load changes hit both alike
                    kept.append(median_us(lambda: layer(x), args.repeats // 5))
                    fresh.append(median_us(repack, args.repeats // 5))
                k, f = np.median(kept), np.median(fresh)
                print(f"{cell:5} {H:4d} {T:3d} {B:3d} {k:10.1f} {f:14.1f} {f / k:6.2f}")


if __name__ == "__main__":
    main()
