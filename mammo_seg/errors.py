"""The one exception type for bad input: it names the file (or key) and the reason in one line."""

from __future__ import annotations

import os


class MammoError(Exception):
    """Bad input or configuration: ``str(err)`` is ``"<where>: <reason>"``, one line, no traceback needed.

    Batch jobs catch it per item, report it and go on; the CLI prints it and exits with status 2.
    """

    def __init__(self, where: str | os.PathLike | None, reason: str):
        self.where = None if where is None else str(where)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(self.reason if self.where is None else f"{self.where}: {self.reason}")
