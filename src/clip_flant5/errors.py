"""The package's one error type for bad input.

`UserError` (and its subclasses) means: a file, a record, a flag or a setting the user gave is wrong, and the
message says which and what to do. The CLI prints it in one line and exits 2; any other exception is a bug and
keeps its traceback. It is a ValueError, so callers that caught ValueError keep working.
"""


class UserError(ValueError):
    """Bad input, named in the message with what to do about it."""
