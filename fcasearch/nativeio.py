"""What native code (C++ inside torch and its libraries) writes straight to stdout or stderr.

Python-level redirection (``contextlib.redirect_stdout``) does not reach it:
:func:`native_output_held` points the file descriptor itself at a temporary file for a moment.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["native_output_held"]


@contextlib.contextmanager
def native_output_held(fd: int, *, pass_on_success: bool = False) -> Iterator[None]:
    """Hold what is written to file descriptor ``fd`` (1: stdout, 2: stderr) during the block.

    Args:
        fd: 1 or 2.
        pass_on_success: write what was held to ``fd`` after a block that did not raise (where
            it would have gone); otherwise it is dropped.

    Without a usable descriptor (an embedded interpreter) the block runs as it is.
    """
    stream = sys.stdout if fd == 1 else sys.stderr
    try:
        stream.flush()
        saved = os.dup(fd)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), fd)
        ok = False
        try:
            yield
            ok = True
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                stream.flush()
            os.dup2(saved, fd)
            os.close(saved)
            if pass_on_success and ok and os.fstat(held.fileno()).st_size:
                held.seek(0)
                os.write(fd, held.read())
