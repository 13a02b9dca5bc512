"""`fusedrnn train`: a character-level language model on any text file, by default the Python
standard library's own sources, trained with truncated backpropagation through time; prints a
sample of generated text at the end.

    Embedding(vocab, embed) -> LSTM(embed, hidden, layers), every step, state carried between
    chunks -> Dense(hidden, vocab, softmax); Adam, sparse categorical cross-entropy.

The text is cut into batch_size parallel streams read ``steps`` characters at a time
(datasets.tbptt_arrays); the last 5% is held out for validation.  A checkpoint is written
after every epoch (atomically) and --resume continues from it exactly.  With --distributed,
under ``mpiexec -n N fusedrnn train --distributed``, the N processes train one model data-parallel
(each keeps batch_size/N of the streams; fusedrnn.keras.distributed); rank 0 prints and writes
the checkpoint.  cli.py registers the subcommand with add_arguments and run.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

EXIT_OK, EXIT_FAILED = 0, 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--text", metavar="PATH",
                   help="text file to learn (default: the standard library's .py sources)")
    g.add_argument("--max-chars", type=int, default=1_000_000, metavar="N",
                   help="use at most N characters of the text (default 1000000; 0 = all)")
    g = p.add_argument_group("model")
    g.add_argument("--cell", choices=("lstm", "gru"), default="lstm", help="recurrent cell (default lstm)")
    g.add_argument("--embed", type=int, default=32, metavar="N", help="embedding size (default 32)")
    g.add_argument("--hidden", type=int, default=256, metavar="N", help="hidden size (default 256)")
    g.add_argument("--layers", type=int, default=2, metavar="N", help="stacked layers (default 2)")
    g.add_argument("--dropout", type=float, default=0.0, metavar="P",
                   help="dropout between stacked layers (default 0)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=1, metavar="N", help="epochs (default 1)")
    g.add_argument("--batch-size", type=int, default=32, metavar="N", help="parallel streams (default 32)")
    g.add_argument("--steps", type=int, default=64, metavar="N",
                   help="characters per truncated-BPTT chunk (default 64)")
    g.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    g.add_argument("--clipnorm", type=float, default=5.0, help="global gradient-norm clip (default 5)")
    g.add_argument("--seed", type=int, default=0, help="seed of weights and sampling (default 0)")
    g.add_argument("--threads", type=int, metavar="N", help="kernel threads (default: all cores)")
    g.add_argument("--checkpoint", default="fusedrnn-char.npz", metavar="PATH",
                   help="checkpoint written after every epoch (default fusedrnn-char.npz)")
    g.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint (its model, optimiser and epoch count)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--distributed", action="store_true",
                   help="data-parallel over the processes of an MPI job: mpiexec -n N fusedrnn "
                        "train --distributed (needs mpi4py: pip install \"fusedrnn[mpi]\")")
    g = p.add_argument_group("sampling")
    g.add_argument("--sample-length", type=int, default=400, metavar="N",
                   help="characters to generate at the end (default 400; 0 = none)")
    g.add_argument("--temperature", type=float, default=0.7,
                   help="sampling temperature: lower is safer, higher more varied (default 0.7)")
    g.add_argument("--prime", default="def ", help="text the sample starts from (default 'def ')")


def build_model(vocab_size, embed=32, hidden=256, layers=2, cell="lstm", dropout=0.0, seed=0):
    from . import GRU, LSTM, Dense, Embedding, Recurrent, Sequential

    klass = LSTM if cell == "lstm" else GRU
    return Sequential([
        Embedding(vocab_size, embed),
        Recurrent(klass(embed, hidden, num_layers=layers, dropout=dropout if layers > 1 else 0.0),
                  return_sequences=True, stateful=True),
        Dense(hidden, vocab_size, "softmax"),
    ], seed=seed)


def generate(model, vocab, prime: str, length: int, temperature: float, rng) -> str:
    """Feed ``prime``, then sample ``length`` characters one at a time from softmax(logits /
    temperature), carrying the recurrent state (the model must be stateful)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    prime = "".join(c for c in prime if c in vocab.index) or vocab.chars[0]
    model.reset_states()
    model.forward(vocab.encode(prime)[None, :])
    out = []
    for _ in range(length):
        z = model.layers[-1].logits()[0, -1].astype(np.float64) / temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        nxt = int(rng.choice(len(p), p=p))
        out.append(nxt)
        model.forward(np.array([[nxt]]))
    model.reset_states()
    return prime + vocab.decode(out)


def _checked(args, parser):
    """Every option's value, before anything runs: a bad one is a usage error (exit code 2)
    naming the option, never a traceback from deep inside training."""
    for name in ("epochs", "batch_size", "steps", "embed", "hidden", "layers", "sample_length",
                 "max_chars", "threads"):
        value = getattr(args, name)
        if value is None:
            continue
        least = 0 if name in ("sample_length", "max_chars") else 1
        if value < least:
            parser.error(f"--{name.replace('_', '-')} must be >= {least}, got {value}")
    for name in ("lr", "clipnorm", "temperature"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            parser.error(f"--{name} must be a finite number > 0, got {value}")
    if not 0 <= args.dropout < 1:
        parser.error(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.text is not None and not os.path.isfile(args.text):
        parser.error(f"--text {args.text}: no such file")
    folder = os.path.dirname(os.path.abspath(args.checkpoint))
    if not os.path.isdir(folder):
        parser.error(f"--checkpoint {args.checkpoint}: the folder {folder} does not exist")
    if os.path.isdir(args.checkpoint):
        parser.error(f"--checkpoint {args.checkpoint} is a folder; give a file name")


def run(args, parser) -> int:
    import fusedrnn

    from . import callbacks, datasets, optimizers
    from .models import Sequential

    _checked(args, parser)
    root = True
    if args.distributed:
        from .keras import distributed

        root = distributed.rank() == 0

    def say(*what):
        if root:  # one copy of the output for the whole job
            print(*what, flush=True)

    if args.threads is not None:
        fusedrnn.set_num_threads(args.threads)
    try:
        text = datasets.read_text(args.text, args.max_chars or None)
    except (ValueError, OSError) as exc:
        parser.error(f"--text: {exc}")
    source = args.text or f"the standard library sources ({len(datasets.stdlib_sources())} files)"

    if args.resume:
        if not os.path.exists(args.checkpoint):
            parser.error(f"--resume: no checkpoint at {args.checkpoint}")
        try:
            model = Sequential.load(args.checkpoint)
        except (ValueError, OSError) as exc:
            parser.error(f"--resume: cannot load {args.checkpoint}: {exc}")
        chars = model.metadata.get("vocab")
        vocab = datasets.CharVocab(chars if isinstance(chars, str) else "")
        first = model.layers[0]
        if vocab.size < 2 or model.loss is None or getattr(first, "num_embeddings", None) != vocab.size:
            parser.error(f"--resume: {args.checkpoint} is not a checkpoint of `fusedrnn train` "
                         "(no character vocabulary or no compiled optimiser)")
        text = "".join(c for c in text if c in vocab.index)
        say(f"resuming {args.checkpoint} after epoch {model.epoch}")
    else:
        vocab = datasets.CharVocab(text)
        if vocab.size < 2:
            parser.error(f"--text: the text holds {vocab.size} distinct character(s); a language "
                         "model needs at least 2")
        model = build_model(vocab.size, args.embed, args.hidden, args.layers, args.cell,
                            args.dropout, args.seed)
        model.metadata["vocab"] = "".join(vocab.chars)
        model.compile(optimizers.Adam(args.lr, global_clipnorm=args.clipnorm),
                      "sparse_categorical_crossentropy", ["accuracy"])
    ids = vocab.encode(text)
    cut = int(len(ids) * 0.95)
    try:
        x, y = datasets.tbptt_arrays(ids[:cut], args.batch_size, args.steps)
    except ValueError as exc:
        parser.error(f"--text: too little text for --batch-size {args.batch_size} and --steps "
                     f"{args.steps}: {exc}")
    try:
        val = datasets.tbptt_arrays(ids[cut:], args.batch_size, args.steps)
    except ValueError:
        val = None  # too little text for a validation stream
    say(f"text: {source}, {len(text):,} characters, {vocab.size} distinct")
    say(f"model: {model.count_params():,} parameters; {len(x) // args.batch_size} batches of "
        f"{args.batch_size} x {args.steps} characters per epoch")

    epochs = model.epoch + args.epochs
    start = time.perf_counter()
    hist = model.fit(x, y, batch_size=args.batch_size, epochs=epochs, initial_epoch=model.epoch,
                     shuffle=False, validation_data=val, verbose=0 if args.quiet else 1,
                     callbacks=[callbacks.ModelCheckpoint(args.checkpoint, save_best_only=False)],
                     distributed=True if args.distributed else None)
    seconds = time.perf_counter() - start
    chars = len(x) * args.steps * len(hist.epoch)
    say(f"trained {len(hist.epoch)} epoch(s) in {seconds:.1f}s ({chars / max(seconds, 1e-9):,.0f} "
        f"characters/s); checkpoint: {args.checkpoint}")
    last = {k: v[-1] for k, v in hist.history.items()}
    say("final: " + ", ".join(f"{k} {v:.4f}" for k, v in last.items()))
    if args.sample_length and root:
        rng = np.random.default_rng(args.seed)
        sample = generate(model, vocab, args.prime, args.sample_length, args.temperature, rng)
        print(f"\n--- sample (temperature {args.temperature}) ---")
        print(sample)
    return EXIT_OK if np.isfinite(last.get("loss", np.nan)) else EXIT_FAILED


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fusedrnn train", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args, parser)


if __name__ == "__main__":
    sys.exit(main())
