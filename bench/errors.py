"""The exception types the CLI turns into a one-line message and an exit status."""


class BenchError(Exception):
    """A user-facing error: bad input, unknown name, missing weights. Never a traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so runs stop as on Ctrl-C (exit status 143).

    A KeyboardInterrupt, so everything that cleans up after Ctrl-C cleans up after it too.
    """


def interruption(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM behind ``exc``, if it was raised while one was being handled.

    A signal sent to a whole process group (Slurm's ``scancel``) also kills the DataLoader
    workers, and their death surfaces as a RuntimeError raised inside the interrupt's
    handling: that is still a stop, not a failure of the detector.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
