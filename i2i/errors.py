"""The one exception type users see as a clear one-line message, and the exit codes of the ``i2i`` command."""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Optional

EXIT_OK = 0
EXIT_BUG = 1             # an unexpected exception, i.e. a bug in i2i: the traceback is printed
EXIT_ERROR = 2           # a known failure (arguments, paths, config, data, checkpoint, disk): one line on stderr
EXIT_SOME_FAILED = 3     # the command finished, but some inputs failed (convert) or the export check failed
EXIT_INTERRUPTED = 130   # SIGINT / Ctrl-C (128 + 2); training saves a checkpoint first
EXIT_TERMINATED = 143    # SIGTERM, e.g. from a job scheduler (128 + 15); training saves a checkpoint first


class I2IError(Exception):
    """A user-facing error (bad path, bad config, bad image): the CLI prints it in one line and exits non-zero."""


def os_error_message(error: OSError, path: Optional[str | Path] = None) -> str:
    """An OSError in one line naming the path: "no space left on device at PATH" for a full disk or quota."""
    where = path if path is not None else error.filename
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on device at {where}"
    reason = error.strerror or str(error) or type(error).__name__
    return f"{reason}: {where}" if where is not None else reason
