"""User-facing errors.

`MagvitError` marks a mistake the user can fix (bad input, bad config, missing file). The CLI prints
such errors as one line and exits non-zero instead of showing a traceback.
"""


class MagvitError(Exception):
    """A user-facing error: the message says what was expected and what to do."""


class InputError(MagvitError, ValueError):
    """Bad input data (shape, dtype, range, size). Also a `ValueError` for callers that expect one."""

