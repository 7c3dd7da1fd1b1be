"""The one exception type users see as a clear one-line message."""


class I2IError(Exception):
    """A user-facing error (bad path, bad config, bad image): the CLI prints it in one line and exits non-zero."""
