"""(a) Sequence classification: LSTM(128) -> Dense(64, relu) -> Dropout(0.5) -> Dense(10, softmax),
Adam, categorical cross-entropy, accuracy, validation data.

scikit-learn's 8x8 digits, each image read as a sequence of 8 rows of 8 pixels.
Needs: pip install "fusedrnn[examples]".   Run: python examples/a_digits_lstm.py [--epochs N]
"""

import argparse

import fusedrnn
from fusedrnn import LSTM, Dense, Dropout, Recurrent, Sequential, datasets, optimizers


def build_model(features=8, classes=10, hidden=128, seed=0, learning_rate=0.002):
    model = Sequential([
        Recurrent(LSTM(features, hidden)),
        Dense(hidden, 64, activation="relu"),
        Dropout(0.5),
        Dense(64, classes, activation="softmax"),
    ], seed=seed)
    model.compile(optimizer=optimizers.Adam(learning_rate), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", metavar="PNG", help="write the training curves (needs matplotlib)")
    p.add_argument("--verbose", type=int, default=2)
    args = p.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = datasets.load_digits()
    y_train1, y_test1 = datasets.one_hot(y_train, 10), datasets.one_hot(y_test, 10)
    steps = -(-len(x_train) // args.batch_size) * args.epochs
    model = build_model(seed=args.seed, learning_rate=optimizers.CosineDecay(0.002, steps))
    cbs = [fusedrnn.callbacks.HistoryPlot(args.plot)] if args.plot else []
    # As the classic program: the test set is the validation data, watched, never selected on.
    model.fit(x_train, y_train1, epochs=args.epochs, batch_size=args.batch_size,
              validation_data=(x_test, y_test1), callbacks=cbs, verbose=args.verbose)
    model.summary()
    loss, acc = model.evaluate(x_test, y_test1)
    print(f"digits test: loss {loss:.4f}, accuracy {acc:.4f} ({len(x_test)} images)")
    return acc


if __name__ == "__main__":
    main()
