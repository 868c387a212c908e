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
