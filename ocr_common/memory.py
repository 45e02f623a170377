"""Giving freed heap back to the system: after a large page, glibc keeps what it freed in its
arenas (an API process held 1.5-2.1 GB after 16 previews of one large page; malloc_trim gave
back all but 100 MB of a 472 MB test process)."""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to trim
        return None


def release_memory() -> None:
    """Give freed heap back to the system (glibc's malloc_trim; nothing elsewhere)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
