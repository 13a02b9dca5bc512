"""The `fusedrnn` command (also `python -m fusedrnn`): a dispatcher for its subcommands.

    fusedrnn bench ...   microbenchmarks against the NumPy reference and torch.nn (fusedrnn/bench/cli.py)
    fusedrnn check       build facts and a quick parity self-test (fusedrnn/bench/cli.py)
    fusedrnn train ...   a character-level language model (fusedrnn/train_cli.py)

Each subcommand is a pair of functions: ``add(subparsers)`` declares its flags and
``run(args, parser) -> int`` runs it; ``_commands()`` lists the pairs (imported when the parser
is built: fusedrnn.bench.cli takes its exit codes from this module).  ``main`` returns the exit code:
0 ok, 1 a validation failed, 2 a usage error (argparse's), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


# ----------------------------------------------------------------------------
# train (the character model lives in train_cli.py)
# ----------------------------------------------------------------------------

def _add_train(subparsers):
    from .train_cli import add_arguments

    p = subparsers.add_parser(
        "train", help="train a character-level LSTM on a text file and sample from it",
        description="Train a character-level language model (truncated BPTT, checkpoints after "
                    "every epoch) on --text, by default the Python standard library's sources, "
                    "then print generated text.")
    add_arguments(p)
    return p


def _run_train(args, parser) -> int:
    from .train_cli import run

    return run(args, parser)


# ----------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------

def _commands() -> dict:
    from .bench import cli as bench_cli

    return {
        "bench": (bench_cli.add_bench, bench_cli.run_bench),
        "check": (bench_cli.add_check, bench_cli.run_check),
        "train": (_add_train, _run_train),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusedrnn", description="Fused LSTM/GRU/RNN kernels for NumPy: benchmarks and checks.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (add, run) in _commands().items():
        sub = add(subparsers)
        sub.set_defaults(run=run, parser=sub)
    return parser


def main(argv=None) -> int:
    """Run the command line `argv` (default sys.argv[1:]); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        args.argv = argv[argv.index(args.command) + 1:]
        return args.run(args, args.parser)
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
    except BrokenPipeError:  # the output went to `head` & co., which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
