"""Process memory: read resident and peak memory, keep the heap from fragmenting, and give
freed heap memory back to the system.

Why: a lifecycle cleanup frees the engine (onnxruntime sessions, caches) and the input buffers,
but glibc keeps freed heap memory inside the process. Two of its defaults made the node's RSS
creep up over configure/cleanup cycles with camera frames flowing (+9% in 18 cycles, still
rising): large buffers (a 640x480 frame is 900 KB, several per message) land on the heap once
glibc's dynamic mmap threshold has grown, where they fragment it; and every thread that
allocates may get its own arena (up to 8 per core), each keeping its own free memory.
`tune_allocator` fixes the mmap threshold at 128 KiB (large buffers are mapped and unmapped, so
freeing them returns them) and caps the arenas at 2; `release_free_memory` (glibc
`malloc_trim`) returns the rest after a cleanup. With both, RSS over lifecycle cycles stays
within a few MB (docs/reliability.md, "Lifecycle memory").

That threshold has a price while frames flow: every buffer over 128 KiB (a frame, its copies,
the 224 px float input and its warped copy) is mapped fresh and unmapped again, so the kernel
zero-fills its pages on first touch, several megabytes per frame; and glibc's default 128 KiB
trim threshold hands the top of the heap back and takes it again frame after frame. In the
node the motion stage took 6.2 ms of its thread's CPU time on a textured pan against about
2 ms in a plain loop. `streaming_allocator` therefore switches to a streaming policy while the
node is active: buffers up to 32 MiB come from the heap and freed memory up to 128 MiB stays
there for the next frame; deactivating switches back before anything is released, so what
configure loads (sessions, weights) is still mapped the way the lifecycle fix needs. The node
also calls `trim_free_memory` once a second while active, so what a burst freed (up to 128
MiB) is not kept for good; the frame buffers it returns are faulted back in once a second, which
did not show in the node benchmark. In 10-minute soaks RSS rose by about the same with the
trim (+4.9%, level at the end), without it (+5.2%, in one step) and with the previous policy
(+4.4%, still rising at the end). Measured in docs/benchmarks.md (node section) and
docs/reliability.md ("Lifecycle memory").

The readers are Linux /proc files; elsewhere they return None, and on a libc other than glibc
tuning and trimming do nothing.
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


_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024
TRIM_THRESHOLD = 128 * 1024  # glibc's default
ARENA_MAX = 2
STREAMING_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's own ceiling for its dynamic threshold
STREAMING_TRIM_THRESHOLD = 128 * 1024 * 1024


@cache
def _glibc(symbol: str):
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return getattr(ctypes.CDLL(name), symbol, None)  # None on other libcs
    except OSError:
        return None


@cache
def tune_allocator() -> bool:
    """Once per process, as early as possible (arenas already created stay): fixed 128 KiB mmap
    threshold and at most 2 malloc arenas. True when glibc accepted both."""
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return bool(mallopt(_M_ARENA_MAX, ARENA_MAX)) and ok


def streaming_allocator(streaming: bool) -> bool:
    """True: the streaming policy (buffers up to STREAMING_MMAP_THRESHOLD from the heap, up to
    STREAMING_TRIM_THRESHOLD of freed heap kept); False: back to `tune_allocator`'s threshold
    and glibc's default trim threshold. Process-wide, like every mallopt. True when glibc
    accepted both."""
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    mmap, trim = ((STREAMING_MMAP_THRESHOLD, STREAMING_TRIM_THRESHOLD) if streaming
                  else (MMAP_THRESHOLD, TRIM_THRESHOLD))
    ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap))
    return bool(mallopt(_M_TRIM_THRESHOLD, trim)) and ok


def trim_free_memory() -> bool:
    """Return the heap's free pages to the system (glibc malloc_trim), no garbage collection.
    True when trimming ran."""
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    try:
        trim(0)
    except OSError as exc:  # pragma: no cover - a broken libc
        log.debug("malloc_trim failed: %s", exc)
        return False
    return True


def release_free_memory() -> bool:
    """Collect garbage, then return the heap's free pages to the system (glibc malloc_trim).
    Call it after large objects were released (lifecycle cleanup). True when trimming ran."""
    gc.collect()
    return trim_free_memory()
