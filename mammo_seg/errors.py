"""The one exception type for bad input: it names the file (or key) and the reason in one line; and
:func:`printable`, the one way a file name or message is made safe to print on one line."""

from __future__ import annotations

import os
import re


class MammoError(Exception):
    """Bad input or configuration: ``str(err)`` is ``"<where>: <reason>"``, one line, no traceback needed.

    Batch jobs catch it per item, report it and go on; the CLI prints it and exits with status 2.
    """

    def __init__(self, where: str | os.PathLike | None, reason: str):
        self.where = None if where is None else str(where)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(self.reason if self.where is None else f"{self.where}: {self.reason}")


def printable(text) -> str:
    """``text`` safe to write as UTF-8 on one line: bytes of a file name that is not UTF-8 (held by
    Python as surrogate escapes) become ``\\xNN``, control characters such as a newline ``\\n``."""
    text = str(text)
    if text.isprintable():
        return text
    text = os.fsencode(text).decode("utf-8", "backslashreplace") if _has_surrogates(text) else text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


_QUOTED = re.compile(r"b?'[^']*'|b?\"[^\"]*\"")


def without_values(message) -> str:
    """A library's message on one line with every quoted value replaced by ``'…'``: pydicom quotes the
    malformed value it met (a birth date, a name), which must never reach a console or a report."""
    return printable(_QUOTED.sub("'…'", " ".join(str(message).split())))


def _has_surrogates(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)
