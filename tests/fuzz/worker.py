"""Runs fuzz cases in a child process, so that a crash or a hang fails one case instead of
killing the test run.  Started by isolation.Worker; not a test module.

Protocol on stdin/stdout: length-prefixed pickles.  In: (task name, args).  Out, per case:
("start",) before running it, then ("done", outcome, peak_rss_bytes) where outcome is
("ok", value) or ("raise", exception type name, message).  The peak RSS is reset before each
case (Linux /proc/self/clear_refs), so it is the case's own peak.
argv[1]: address-space limit in bytes (0: none), so that allocations past it fail as they
would on a machine with that much memory, instead of paging in the host's.
"""

import os
import pickle
import resource
import struct
import sys


def _send(stream, obj):
    data = pickle.dumps(obj)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _recv(stream):
    head = stream.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    return pickle.loads(stream.read(n))


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main():
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # The tests folder, as pytest puts it on sys.path: pickled fuzz values name fuzz.* classes.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from fuzz import tasks

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the protocol
    while True:
        msg = _recv(inp)
        if msg is None:
            return
        name, args = msg
        _send(out, ("start",))
        _reset_peak()
        try:
            outcome = ("ok", getattr(tasks, name)(*args))
        except BaseException as exc:  # noqa: BLE001 -- reported to the parent, which judges it
            outcome = ("raise", type(exc).__name__, str(exc)[:2000])
        _send(out, ("done", outcome, _peak_rss()))


if __name__ == "__main__":
    main()
