"""The one exception type the CLI turns into a one-line message and exit status 2."""


class BenchError(Exception):
    """A user-facing error: bad input, unknown name, missing weights. Never a traceback."""
