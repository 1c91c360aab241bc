"""Files replaced atomically: written under a temporary name, then renamed over the target.

A process killed at any moment leaves every such file either in its old state or in its new one.
Prep passes ``tmp_dir`` (a folder it owns and empties on every run), so that an interrupted run's
temporaries never lie among the user's files; everything else writes its temporary beside the
target, as a hidden ``.tmp-<pid>-<name>`` that keeps the target's extension.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile


TEMPORARY = re.compile(r"^\.tmp-(\d+)-")


def temporary_path(path: str, tmp_dir: str | None = None) -> str:
    """A fresh temporary name for ``path``: inside ``tmp_dir`` when given, else beside ``path``."""
    if tmp_dir is None:
        head, tail = os.path.split(path)
        return os.path.join(head, f".tmp-{os.getpid()}-{tail}")
    os.makedirs(tmp_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=f"{os.getpid()}-", suffix=f"-{os.path.basename(path)}")
    os.close(fd)
    return tmp


def remove_stale_temporaries(folder: str) -> list[str]:
    """Remove the ``.tmp-<pid>-<name>`` files in ``folder`` whose process is gone (a run killed with ``kill -9``
    while writing); returns their names. A living process's temporaries are left to it."""
    removed = []
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(folder)):
            match = TEMPORARY.match(name)
            if match and not _alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, name))
                    removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process, or a pid this platform cannot signal: assume alive
        return True
    return True


@contextlib.contextmanager
def replacing(path: str, tmp_dir: str | None = None):
    """Yields a temporary name to write the new ``path`` to (by any library); it replaces ``path``
    when the block ends, and is removed if the block fails."""
    tmp = temporary_path(path, tmp_dir)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def write_bytes(path: str, data: bytes, tmp_dir: str | None = None) -> str:
    """Write ``data`` to ``path`` (flushed to disk before the rename); returns ``path``. An ``OSError`` of the
    write itself (a full disk) names ``path``, which Python's own does not."""
    try:
        with replacing(path, tmp_dir) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror, path) from None
    return path


def write_text(path: str, text: str, tmp_dir: str | None = None) -> str:
    return write_bytes(path, text.encode("utf-8"), tmp_dir)


def write_json(path: str, content, tmp_dir: str | None = None, *, indent: int | None = 2, sort_keys: bool = True,
               final_newline: bool = True) -> str:
    """``content`` as JSON (by default indented by 2, keys sorted, ending in a newline)."""
    text = json.dumps(content, indent=indent, sort_keys=sort_keys)
    return write_text(path, text + "\n" if final_newline else text, tmp_dir)
