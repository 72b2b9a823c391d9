"""The one exception type that reaches users as a single clear line instead of a traceback."""


class UserInputError(Exception):
    """Bad input from the user (a file, a checkpoint, an option): reported as one line, exit code 2.

    The message names the offending file or option and what is wrong with it.
    """


# Exit codes of the command line: user errors, and runs where only some inputs failed.
USER_ERROR_EXIT = 2
PARTIAL_FAILURE_EXIT = 1
