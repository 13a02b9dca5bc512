"""Cases run per property (printed at the end of the session by conftest.py), the per-property
example budget, and the marks of properties that fail on today's code."""

import collections
import functools

CASES: collections.Counter = collections.Counter()


def counted(test):
    """Count every example hypothesis runs through `test` (apply below @given)."""
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        CASES[test.__name__] += 1
        return test(*args, **kwargs)
    return wrapper


def examples(n: int):
    """settings for a property worth n cases in the ci profile (25x that in the long one)."""
    from hypothesis import settings

    from .conftest import PROFILE

    return settings(max_examples=n * 25 if PROFILE == "long" else n)


def known_defects(reasons: dict, names):
    """names as pytest params; those in `reasons` (name -> the defect, one line) are marked
    xfail(strict=True), so they fail loudly once the defect is fixed."""
    import pytest

    return [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=reasons[n]))
            if n in reasons else n for n in names]
