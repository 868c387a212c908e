"""The one exception type that becomes a clear message and exit code 2."""


class UsageError(Exception):
    """Bad input or a missing prerequisite. `fix` tells the user what to do about it."""

    exit_code = 2

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message


def attempt(fn, *args, attached: bool = True) -> tuple[str, str, bool] | None:
    """Run a step whose UsageError must not end the sample (a syscall counter's attach, read,
    detach; a tracer's close): None, or (reason, fix, attached)."""
    try:
        fn(*args)
    except UsageError as exc:
        return exc.message, exc.fix, attached
    return None


def report(exc: UsageError, stream=None, prog: str = "bench") -> int:
    """The one way a UsageError reaches the user: its message and its fix, then exit code 2."""
    import sys
    stream = stream or sys.stderr
    print(f"{prog}: error: {exc.message}", file=stream)
    if exc.fix:
        print(f"{prog}: fix: {exc.fix}", file=stream)
    return UsageError.exit_code
