"""Process memory: read resident and peak memory, and give freed heap memory back to the system.

Why: a lifecycle cleanup frees the engine (onnxruntime sessions, caches), but glibc keeps freed
heap pages inside the process, fragmented by the sessions' many allocations from several threads,
so the process's RSS stays at its high-water mark and creeps up over configure/cleanup cycles.
`release_free_memory` (glibc `malloc_trim`) returns those pages after cleanup. The readers are
Linux /proc files; elsewhere they return None and trimming does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
from functools import cache

log = logging.getLogger(__name__)


def _status_kb(field: str, pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes(pid: int | str = "self") -> int | None:
    """Resident set size of a process (VmRSS), or None where /proc is not available."""
    kb = _status_kb("VmRSS", pid)
    return None if kb is None else kb * 1024


def peak_rss_bytes(pid: int | str = "self") -> int | None:
    """Peak resident set size (VmHWM) since start or since `reset_peak_rss`."""
    kb = _status_kb("VmHWM", pid)
    return None if kb is None else kb * 1024


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0, `clear_refs` value 5).
    False when the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def mapped_libraries(pid: int | str = "self") -> set[str]:
    """File names of the shared libraries mapped into a process (empty where /proc is missing)."""
    names: set[str] = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and ".so" in parts[5]:
                    names.add(os.path.basename(parts[5].strip()))
    except OSError:
        pass
    return names


@cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None)  # glibc only
    except OSError:
        return None


def release_free_memory() -> bool:
    """Collect garbage, then return the heap's free pages to the system (glibc malloc_trim).
    Call it after large objects were released (lifecycle cleanup). True when trimming ran."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    try:
        trim(0)
    except OSError as exc:  # pragma: no cover - a broken libc
        log.debug("malloc_trim failed: %s", exc)
        return False
    return True
