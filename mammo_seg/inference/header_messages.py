"""The messages a DICOM library prints while reading a scan's header (pydicom warnings and log records):
collected into that scan's record with quoted values masked, never printed, since a header value may identify a
patient."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings


from mammo_seg.errors import without_values

HEADER_LIBRARIES = ("pydicom", "highdicom", "PIL")


_route = threading.local()


@contextlib.contextmanager
def notes_to(notes: list):
    """Header messages raised in this thread during the block go to ``notes`` (while they are captured:
    :func:`header_messages_captured`); each scan of a pipelined run collects its own."""
    saved = getattr(_route, "notes", None)
    _route.notes = notes
    try:
        yield notes
    finally:
        _route.notes = saved

def _note(message) -> None:
    """Add a captured message, its quoted values replaced by ``'…'``, to this thread's notes (if any)."""
    notes = getattr(_route, "notes", None)
    text = without_values(message)
    if notes is not None and text not in notes:
        notes.append(text)

@contextlib.contextmanager
def header_messages_captured():
    """While the block runs, in every thread, the warnings and log lines of :data:`HEADER_LIBRARIES` go
    to the notes of the scan that thread works on (:func:`notes_to`) instead of the console; other
    warnings are shown as usual. Enter it from the main thread."""

    class Collect(logging.Handler):
        def emit(self, record):
            _note(record.getMessage())

    loggers = [logging.getLogger(name) for name in HEADER_LIBRARIES]
    saved = [(logger.propagate, logger.handlers[:]) for logger in loggers]
    handler = Collect()
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if any(f"{os.sep}{name}{os.sep}" in str(filename) for name in HEADER_LIBRARIES):
            _note(message)
        else:
            show(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = showwarning
        for logger in loggers:
            logger.handlers, logger.propagate = [handler], False
        try:
            yield
        finally:
            for logger, (propagate, handlers) in zip(loggers, saved):
                logger.handlers, logger.propagate = handlers, propagate

@contextlib.contextmanager
def header_warnings():
    """Collect the warnings and log lines of :data:`HEADER_LIBRARIES` instead of printing them.

    Yields a live list of their messages with every quoted value replaced by ``'…'`` (pydicom
    quotes the malformed value: a birth date, a name). Other warnings are shown as usual.
    """
    notes: list[str] = []
    with header_messages_captured(), notes_to(notes):
        yield notes
