"""Fuzz-suite setup: hypothesis profiles, a hang watchdog, and the count of cases run.

Profiles (chosen by the FUSEDRNN_FUZZ environment variable, see docs/fuzzing.md):
    ci    (default) derandomized, so every run tries the same cases; about a minute in total
    long  FUSEDRNN_FUZZ=long: random cases, 25x as many per property, failures saved in
          .hypothesis/ and replayed first on the next run
"""

import faulthandler
import os
import sys

import pytest
from hypothesis import HealthCheck, Phase, settings

from . import counting

_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

# The deadline flags a single case that is pathologically slow (a near-hang) without tripping
# on the noise of a shared 2-core machine; real hangs are caught by the watchdog below.
# ci does not shrink: a failure there is reported as found (with its reproduce blob), and the
# known-defect xfails do not spend the time budget shrinking; the long profile shrinks.
settings.register_profile("ci", derandomize=True, database=None, deadline=5000,
                          max_examples=80, suppress_health_check=_SUPPRESS, print_blob=True,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.register_profile("long", derandomize=False, deadline=20000, max_examples=1000,
                          suppress_health_check=_SUPPRESS, print_blob=True)
PROFILE = os.environ.get("FUSEDRNN_FUZZ", "ci")
if PROFILE not in ("ci", "long"):
    raise pytest.UsageError(f"FUSEDRNN_FUZZ must be 'ci' or 'long', got {PROFILE!r}")
settings.load_profile(PROFILE)

# A test of this folder that runs longer than this is hung: dump every thread's stack and
# exit, so a hang is a failure with a traceback instead of a run that never ends.
_HANG_SECONDS = 600 if PROFILE == "long" else 120


@pytest.fixture(scope="module")
def worker():
    """The crash-isolating child process (isolation.py).  Linux only: it reads its pipe with
    select() (sockets only on Windows) and relies on an enforced address-space limit
    (RLIMIT_AS, which macOS does not enforce) so that sizes past memory fail without paging."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the crash-isolated fuzz cases need Linux (select on pipes, RLIMIT_AS)")
    from .isolation import Worker

    w = Worker()
    yield w
    w.close()


@pytest.fixture(autouse=True)
def _hang_watchdog():
    faulthandler.dump_traceback_later(_HANG_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def pytest_terminal_summary(terminalreporter):
    if counting.CASES:
        total = sum(counting.CASES.values())
        terminalreporter.write_line(f"fuzz cases run ({PROFILE} profile): {total} "
                                    f"over {len(counting.CASES)} properties")
        if terminalreporter.config.getoption("verbose") > 0:
            for name, n in sorted(counting.CASES.items()):
                terminalreporter.write_line(f"  {n:6d}  {name}")
