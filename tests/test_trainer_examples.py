"""Each program in examples/ built and trained for an epoch or two on tiny synthetic data of
its real data's shape (CI needs no datasets), the `fusedrnn train` character model end to end
on a small text file, and the dataset helpers."""

import builtins
import importlib
import importlib.util
import pathlib

import numpy as np
import pytest

from fusedrnn import datasets

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fits(model, x, y, epochs=2, **kw):
    hist = model.fit(x, y, epochs=epochs, batch_size=8, verbose=0, **kw)
    assert all(np.isfinite(v) for v in hist.history["loss"])
    return hist


def test_a_digits_lstm(rng):
    model = example("a_digits_lstm").build_model(hidden=16)
    x = rng.uniform(0, 1, (24, 8, 8)).astype(np.float32)
    y = datasets.one_hot(rng.integers(0, 10, 24), 10)
    fits(model, x, y, validation_data=(x[:8], y[:8]))
    assert model.predict(x).shape == (24, 10)


def test_b_sunspots_lstm(rng):
    series = np.abs(np.sin(np.arange(60) / 5)) * 100
    x, y = datasets.windows(series / 100, 9)
    model = example("b_sunspots_lstm").build_model(9, hidden=8)
    fits(model, x, y)
    mse, mae = model.evaluate(x, y)
    assert mse >= 0 and mae >= 0


def test_c_digits_binary(rng):
    model = example("c_digits_binary").build_model(hidden=8)
    x = rng.uniform(0, 1, (24, 8, 8)).astype(np.float32)
    fits(model, x, rng.integers(0, 2, (24, 1)).astype(np.float32), validation_split=0.25)
    assert model.predict(x).shape == (24, 1)


def test_d_sine_rnn_learns():
    ex = example("d_sine_rnn")
    x, y = ex.make_data(n=64, steps=12)
    model = ex.build_model(hidden=8)
    hist = fits(model, x, y, epochs=3)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert model.predict(x).shape == (64, 12, 1)


@pytest.mark.parametrize("name", ["e_vowels_gru", "f_stacked_vowels"])
def test_vowels_models_with_lengths(rng, name):
    model = example(name).build_model(hidden=8)
    x = rng.standard_normal((20, 29, 12)).astype(np.float32)
    lengths = rng.integers(7, 30, 20)
    fits(model, x, rng.integers(0, 9, 20), lengths=lengths)
    assert model.predict(x, lengths=lengths).shape == (20, 9)


def test_g_char_model_generate(rng):
    ex = example("g_char_model")
    vocab = datasets.CharVocab("abc def\n")
    model = ex.build_model(vocab.size, embed=4, hidden=8, layers=2)
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = datasets.tbptt_arrays(vocab.encode("abc def\n" * 20), batch_size=2, steps=5)
    fits(model, x, y, shuffle=False)
    text = ex.generate(model, vocab, "ab", 30, 0.8, np.random.default_rng(0))
    assert len(text) == 32 and text.startswith("ab") and set(text) <= set(vocab.chars)


def test_train_cli_end_to_end(tmp_path, capsys):
    from fusedrnn.train_cli import main

    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 30)
    ckpt = tmp_path / "c.npz"
    common = ["--text", str(text), "--hidden", "8", "--embed", "4", "--layers", "1", "--steps",
              "8", "--batch-size", "4", "--checkpoint", str(ckpt), "--quiet", "--sample-length", "20"]
    assert main(common + ["--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "--- sample (temperature 0.7) ---" in out and ckpt.exists()
    from fusedrnn.cli import main as fusedrnn_main  # the `fusedrnn train` subcommand

    assert fusedrnn_main(["train"] + common + ["--epochs", "1", "--resume"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert fusedrnn_main(["train", "--epochs", "0"]) == 2  # usage error
    with pytest.raises(SystemExit):
        main(["--text", str(tmp_path / "missing.txt")])


def test_tbptt_arrays_continue_row_by_row():
    ids = np.arange(23)
    x, y = datasets.tbptt_arrays(ids, batch_size=2, steps=4)
    # streams 0..10 and 11..21, chunks of 4: batch 0 = rows 0-1, batch 1 = rows 2-3
    np.testing.assert_array_equal(x[:4], [[0, 1, 2, 3], [11, 12, 13, 14], [4, 5, 6, 7], [15, 16, 17, 18]])
    np.testing.assert_array_equal(y, x + 1)
    with pytest.raises(ValueError, match="too few"):
        datasets.tbptt_arrays(ids[:5], batch_size=2, steps=4)


def test_text_and_windows_helpers():
    text = datasets.read_text(max_chars=1000)  # the standard library's sources
    assert len(text) == 1000
    vocab = datasets.CharVocab(text)
    assert vocab.decode(vocab.encode(text)) == text
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode("\x00")
    x, y = datasets.windows(np.arange(6.0), 3)
    np.testing.assert_array_equal(x[:, :, 0], [[0, 1, 2], [1, 2, 3], [2, 3, 4]])
    np.testing.assert_array_equal(y[:, 0], [3, 4, 5])


def test_loaders_explain_the_missing_extra(monkeypatch):
    real_import = builtins.__import__

    def blocked(name, *a, **k):
        if name.split(".")[0] in ("sklearn", "sktime", "statsmodels"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", blocked)
    monkeypatch.setattr(importlib, "import_module", lambda name: blocked(name))
    for loader in (datasets.load_digits, datasets.load_japanese_vowels, datasets.load_sunspots):
        with pytest.raises(ImportError, match=r'pip install "fusedrnn\[examples\]"'):
            loader()


def test_real_loaders_when_installed():
    pytest.importorskip("sklearn")
    (xt, yt), (xs, ys) = datasets.load_digits()
    assert xt.shape[1:] == (8, 8) and len(xt) + len(xs) == 1797 and set(ys) == set(range(10))
