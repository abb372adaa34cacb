"""The job an RQ worker runs in tests/apps.rs (imported by name from PYTHONPATH)."""


def square(n):
    """Returns n * n: the test checks every job's result."""
    return n * n
