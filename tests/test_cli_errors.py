"""`fusedrnn train` with bad options: a usage error (exit code 2) naming the option, never a
traceback."""

import subprocess
import sys

import numpy as np
import pytest

from fusedrnn import cli

SMALL = ["--epochs", "1", "--batch-size", "2", "--steps", "4", "--embed", "4", "--hidden", "8",
         "--layers", "1", "--sample-length", "0", "--quiet"]


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij" * 20)
    return path


def _train(args, capsys):
    code = cli.main(["train", *args])
    err = capsys.readouterr().err
    return code, err.strip().splitlines()[-1] if err.strip() else ""


def _usage_error(args, capsys, option):
    code, last = _train(args, capsys)
    assert code == 2, last
    assert last.startswith("fusedrnn train: error: ") and option in last, last
    assert "Traceback" not in last
    return last


@pytest.mark.parametrize("content", ["", "a", "aaaa"])
def test_text_too_short_or_too_plain(tmp_path, capsys, content):
    path = tmp_path / "short.txt"
    path.write_text(content)
    _usage_error(["--text", str(path), "--checkpoint", str(tmp_path / "c.npz"), *SMALL], capsys, "--text")


def test_text_shorter_than_one_batch(tmp_path, capsys):
    path = tmp_path / "short.txt"
    path.write_text("abcdef")
    _usage_error(["--text", str(path), "--checkpoint", str(tmp_path / "c.npz"), *SMALL], capsys, "--text")


@pytest.mark.parametrize("option,value", [
    ("--lr", "-1"), ("--lr", "0"), ("--lr", "nan"), ("--lr", "inf"),
    ("--threads", "-2"), ("--threads", "0"),
    ("--clipnorm", "-5"), ("--dropout", "1.5"), ("--dropout", "-0.1"), ("--temperature", "0"),
    ("--epochs", "0"), ("--hidden", "-3"),
])
def test_bad_numbers(tmp_path, capsys, text, option, value):
    _usage_error(["--text", str(text), "--checkpoint", str(tmp_path / "c.npz"), *SMALL,
                  option, value], capsys, option)
    assert not (tmp_path / "c.npz").exists()


def test_checkpoint_in_a_missing_folder(tmp_path, capsys, text):
    last = _usage_error(["--text", str(text), "--checkpoint", str(tmp_path / "nope" / "c.npz"), *SMALL],
                        capsys, "--checkpoint")
    assert "does not exist" in last


def test_checkpoint_that_is_a_folder(tmp_path, capsys, text):
    _usage_error(["--text", str(text), "--checkpoint", str(tmp_path), *SMALL], capsys, "--checkpoint")


@pytest.mark.parametrize("content", [b"", b"garbage", b"PK\x03\x04 truncated zip"])
def test_corrupt_resume_file(tmp_path, capsys, text, content):
    ckpt = tmp_path / "c.npz"
    ckpt.write_bytes(content)
    last = _usage_error(["--text", str(text), "--checkpoint", str(ckpt), "--resume", *SMALL],
                        capsys, "--resume")
    assert str(ckpt) in last


def test_resume_from_a_model_that_is_not_a_char_model(tmp_path, capsys, text):
    from fusedrnn import Dense, Sequential

    ckpt = tmp_path / "c.npz"
    m = Sequential([Dense(3, 2)])
    m.compile("adam", "mse")
    m.save(ckpt)
    _usage_error(["--text", str(text), "--checkpoint", str(ckpt), "--resume", *SMALL], capsys, "--resume")


def test_valid_run_then_resume_still_works(tmp_path, capsys, text):
    ckpt = tmp_path / "c.npz"
    assert _train(["--text", str(text), "--checkpoint", str(ckpt), *SMALL], capsys)[0] == 0
    assert _train(["--text", str(text), "--checkpoint", str(ckpt), "--resume", *SMALL], capsys)[0] == 0


def test_in_a_subprocess_the_message_is_one_line(tmp_path, text):
    proc = subprocess.run([sys.executable, "-m", "fusedrnn", "train", "--text", str(text),
                           "--checkpoint", str(tmp_path / "c.npz"), *SMALL, "--threads", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if "error" in l]
    assert lines == ["fusedrnn train: error: --threads must be >= 1, got 0"], proc.stderr
