"""The exception types the CLI turns into a one-line message and an exit status."""


class BenchError(Exception):
    """A user-facing error: bad input, unknown name, missing weights. Never a traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so runs stop as on Ctrl-C (exit status 143).

    A KeyboardInterrupt, so everything that cleans up after Ctrl-C cleans up after it too.
    """
