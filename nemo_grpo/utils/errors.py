"""The base of every error a user can fix from the command line (a key, a file, a folder).

The example scripts turn a `UserError` into one `error: ...` line on stderr and exit status 2,
never a traceback; every other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem in what the user asked for; the message names it and says what to do."""


class RunEnded(Exception):
    """A run ended by something outside it (a preemption signal, a worker that died). str() is the
    one line the command ends with; `exit_status` its exit status. Not a bug: no traceback."""

    exit_status = 1
