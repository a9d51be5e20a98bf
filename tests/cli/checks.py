"""Shared by the tests/cli Python checkers: named checks that print ok/FAIL and collect failures."""
import sys

failures = []


def check(ok, message):
    if ok:
        print(f"ok:   {message}")
    else:
        print(f"FAIL: {message}", file=sys.stderr)
        failures.append(message)
    return ok


def text(value):
    """An HDF5 string attribute as str (h5py may hand back bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)
