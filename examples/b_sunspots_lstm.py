"""(b) Forecasting: LSTM(50, activation='relu') -> Dense(1), mean squared error, evaluate; against
an AR(9) baseline fitted by statsmodels on the same split.

statsmodels' yearly sunspot numbers (1700-2008): the last 20% of the years is the test set.
Both models predict each test year from the true values of the years before it.
Needs: pip install "fusedrnn[examples]".   Run: python examples/b_sunspots_lstm.py [--epochs N]
"""

import argparse

import numpy as np

from fusedrnn import LSTM, Dense, Recurrent, Sequential, datasets, optimizers


def build_model(steps=9, hidden=50, seed=0, learning_rate=0.003):
    model = Sequential([
        Recurrent(LSTM(1, hidden, activation="relu")),
        Dense(hidden, 1),
    ], seed=seed)
    model.compile(optimizers.Adam(learning_rate), "mse", metrics=["mae"])
    return model


def ar_baseline(train, test_context, lags=9):
    """One-step-ahead RMSE inputs of statsmodels' AutoReg(lags) fitted on ``train``:
    predictions for test_context[lags:] from the true values before each."""
    from statsmodels.tsa.ar_model import AutoReg

    fit = AutoReg(train, lags=lags, trend="c").fit()
    const, coef = fit.params[0], fit.params[1:]  # coef[k] multiplies y[t-1-k]
    x, _ = datasets.windows(test_context, lags)
    return const + x[:, ::-1, 0] @ coef


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--steps", type=int, default=9, help="years of history per prediction")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=0)
    args = p.parse_args(argv)

    series = datasets.load_sunspots()
    cut = int(len(series) * 0.8)
    scale = series[:cut].max()  # scale by the training data only
    x_train, y_train = datasets.windows(series[:cut] / scale, args.steps)
    # test windows may reach back into the training years for their history
    x_test, y_test = datasets.windows(series[cut - args.steps:] / scale, args.steps)

    decay = -(-len(x_train) // args.batch_size) * args.epochs
    model = build_model(args.steps, seed=args.seed,
                        learning_rate=optimizers.CosineDecay(0.003, decay))
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=args.verbose)
    mse, mae = model.evaluate(x_test, y_test)
    rmse = float(np.sqrt(mse)) * scale

    ar_pred = ar_baseline(series[:cut], series[cut - 9:], lags=9)
    ar_rmse = float(np.sqrt(np.mean((ar_pred - series[cut:]) ** 2)))
    print(f"sunspots test ({len(y_test)} years from {1700 + cut}): LSTM RMSE {rmse:.2f}, "
          f"AR(9) RMSE {ar_rmse:.2f} ({'LSTM better' if rmse < ar_rmse else 'AR(9) better'})")
    return rmse, ar_rmse


if __name__ == "__main__":
    main()
