"""(d) A vanilla tanh RNN with a linear output, trained by backpropagation through time to
predict the next value of a noisy sine wave at every step (sequence to sequence).

No extra packages: the data is generated.   Run: python examples/d_sine_rnn.py [--epochs N]
"""

import argparse

import numpy as np

from fusedrnn import RNN, Dense, Recurrent, Sequential, optimizers


def make_data(n=512, steps=40, noise=0.05, seed=0):
    """x (n, steps, 1): sin at random phases and frequencies plus noise; y: x one step ahead."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    freq = rng.uniform(0.1, 0.3, (n, 1))
    t = np.arange(steps + 1)[None, :]
    wave = np.sin(freq * t + phase) + noise * rng.standard_normal((n, steps + 1))
    wave = wave.astype(np.float32)[:, :, None]
    return wave[:, :-1], wave[:, 1:]


def build_model(hidden=32, seed=0, learning_rate=0.01):
    model = Sequential([
        Recurrent(RNN(1, hidden, nonlinearity="tanh"), return_sequences=True),
        Dense(hidden, 1),  # linear output at every step
    ], seed=seed)
    model.compile(optimizers.Adam(learning_rate, global_clipnorm=1.0), "mse", ["mae"])
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=2)
    args = p.parse_args(argv)

    x, y = make_data(seed=args.seed)
    x_test, y_test = make_data(n=128, seed=args.seed + 1)
    model = build_model(seed=args.seed)
    model.fit(x, y, epochs=args.epochs, batch_size=32, validation_data=(x_test, y_test),
              verbose=args.verbose)
    mse, mae = model.evaluate(x_test, y_test)
    naive = float(np.mean((x_test - y_test) ** 2))  # "tomorrow = today"
    print(f"sine test: mse {mse:.5f} (repeat-last-value baseline {naive:.5f}), mae {mae:.4f}")
    return mse, naive


if __name__ == "__main__":
    main()
