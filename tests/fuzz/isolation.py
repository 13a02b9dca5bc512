"""Parent side of the crash-isolating worker (worker.py): one child per test (module fixture),
restarted after a crash, killed after a timeout."""

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
# Enough for the interpreter, NumPy, the kernels' threads and real cases; small enough that
# 'needs more memory than there is' is tested without touching the host's memory.
ADDRESS_LIMIT = 3 << 30


class CaseCrashed(AssertionError):
    """The worker died (signal or exit) or hung while running a case."""


class Worker:
    def __init__(self, limit=ADDRESS_LIMIT):
        self.limit = limit
        self.proc = None

    def _start(self):
        # stderr to a file: a pipe nobody reads would block a chatty worker.
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, WORKER, str(self.limit)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err)

    def _read(self, timeout):
        fd = self.proc.stdout.fileno()
        buf = b""
        need = 8
        header = None
        while len(buf) < need:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, need - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
            if header is None and len(buf) == 8:
                (n,) = struct.unpack("<Q", buf)
                header, buf, need = n, b"", n
        return pickle.loads(buf)

    def run(self, task, *args, timeout=60.0):
        """Outcome of tasks.<task>(*args) in the worker: ("ok", value) or ("raise", type,
        message), and its peak RSS in bytes.  A crash or hang raises CaseCrashed."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        data = pickle.dumps((task, args))
        self.proc.stdin.write(struct.pack("<Q", len(data)) + data)
        self.proc.stdin.flush()
        try:
            assert self._read(timeout) == ("start",)
            _, outcome, peak = self._read(timeout)
            return outcome, peak
        except TimeoutError:
            self._kill()
            raise CaseCrashed(f"{task} hung (> {timeout:.0f} s)") from None
        except EOFError:
            code = self.proc.wait()
            self.err.seek(0)
            err = self.err.read().decode(errors="replace")[-1500:]
            self.proc = None
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            raise CaseCrashed(f"{task} killed the process ({how}); stderr: {err}") from None

    def _kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._kill()
        self.proc = None
