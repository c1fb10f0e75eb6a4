"""A released tensor's pages given back when they belong to a mapped file: safetensors hands a checkpoint's
tensors over as views of the file mapped into memory (same dtype, on the CPU), so a weight that nothing will
read again (its oneDNN copy does the products) keeps its pages resident, and counted in the process's memory,
until the kernel needs them. `madvise(MADV_DONTNEED)` drops them at once; were they read again, they would
come back from the file. Memory the allocator owns is never touched: only ranges inside a mapping of a file.
The same for a compiled library's file once it has copied its weights out (drop_file_pages). Linux only
(elsewhere nothing is dropped). Imports only the standard library.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import sys

MADV_DONTNEED = 4


def file_ranges() -> list[tuple[int, int]]:
    """The address ranges mapped from files (with a path and an inode) in this process, now."""
    if not sys.platform.startswith("linux"):
        return []
    ranges = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[4] != "0" and fields[5].startswith("/"):
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    ranges.append((start, end))
    except OSError:
        return []
    return ranges


def drop(address: int, length: int, ranges: list[tuple[int, int]]) -> int:
    """Drops the whole pages of [address, address + length) when they lie in one file mapping of `ranges`;
    returns the bytes dropped (0 where nothing was)."""
    page = mmap.PAGESIZE
    first = -(-address // page) * page  # only pages the tensor fills: a neighbour may share the edge pages
    last = (address + length) // page * page
    if last <= first or not any(start <= first and last <= end for start, end in ranges):
        return 0
    return last - first if _dontneed(first, last - first) else 0


def _dontneed(start: int, length: int) -> bool:
    """madvise(MADV_DONTNEED) over [start, start + length); whether it was done."""
    libc = _libc()
    return libc is not None and libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), MADV_DONTNEED) == 0


@functools.cache
def _libc():
    """The C library's symbols, from the process itself (no search: find_library would run ldconfig)."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def drop_file_pages(path: str, *, at_least: int = 1 << 20) -> int:
    """Drops this process's pages of `path`'s read-only mappings of at least `at_least` bytes that hold no page
    of their own (no copy-on-write: what a relocation or a write made); returns the bytes dropped. A compiled
    library that holds its weights copies them out of its file at load, and the file's pages it read would
    otherwise stay counted in the process's memory beside the copy."""
    if not sys.platform.startswith("linux"):
        return 0
    return sum(end - start for start, end, private in _mappings_of(path)
               if end - start >= at_least and private == 0 and _dontneed(start, end - start))  # fmt: skip


def _mappings_of(path: str) -> list[tuple[int, int, int]]:
    """(start, end, kB of anonymous pages) of each read-only, non-executable mapping of `path` (/proc/self/smaps)."""
    found: list[list[int]] = []
    current: list[int] | None = None
    try:
        with open("/proc/self/smaps") as smaps:
            for line in smaps:
                fields = line.split()
                if fields and "-" in fields[0] and not fields[0].endswith(":"):
                    current = None
                    if len(fields) == 6 and fields[5] == path and fields[1].startswith("r--"):
                        start, end = (int(x, 16) for x in fields[0].split("-"))
                        current = [start, end, -1]  # -1 until its Anonymous line: never dropped without it
                        found.append(current)
                elif current is not None and fields[:1] == ["Anonymous:"]:
                    current[2] = int(fields[1])
    except (OSError, ValueError):
        return []
    return [(start, end, anonymous) for start, end, anonymous in found]
