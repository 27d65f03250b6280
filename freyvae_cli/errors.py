"""The one error type the tool raises for things a user can fix.

The CLI turns a FreyError into a single line on stderr and its exit code; anything else is a bug.
"""


class FreyError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""

    exit_code = 1


class UsageError(FreyError):
    """An option value that cannot work (exit code 2, like any bad command line)."""

    exit_code = 2
