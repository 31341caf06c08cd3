"""Decoded pixels and image headers kept on disk, so the next command on the same image folder skips both.

A pixel entry holds the uint8 squares of one list of files at one store size (:func:`trials.folders.decode`'s
result): ``<key>.npy`` (the pixels, ``(N, S, S, 3)``, read with ``allow_pickle=False``) and ``<key>.json``
(its shape and the files that failed to decode), the JSON written last. A header entry,
``<key>.headers.json``, holds what :func:`trials.folders.scan_images` read from each file's header (size
and mode, or why the file cannot be used). A key hashes the files' paths, sizes and modification times,
what was read (headers, or pixels at a size), :data:`DECODE_VERSION` and Pillow's version: touching,
replacing, adding or removing a file, or another resolution, gives another key, so a stale entry is never read.
Both files are written atomically (temp file + rename), so workers decoding the same folder at the same
time each write a complete, identical entry and readers never see half of one.

Where: ``$NAS_CACHE_DIR`` if set (``off`` disables the cache), else ``$XDG_CACHE_HOME/nas``, else
``~/.cache/nas``; entries go in its ``pixels/`` folder. Nothing is evicted: delete the folder to reclaim
the space (an entry takes N · 3 · S² bytes, e.g. 88 MiB for CIFAR-10-LT at 32 px).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL

from search_space.io import atomic_write

CACHE_ENV = "NAS_CACHE_DIR"
#: Names how :func:`trials.transforms.square_pixels` turns a file into a square; change it whenever that
#: function's output changes, so entries of the old decoding are not read.
DECODE_VERSION = "center-square bilinear, PIL draft, RGB; v1"


def cache_root() -> Path | None:
    """The folder of the pixel cache entries, or None when ``$NAS_CACHE_DIR`` is ``off``."""
    value = os.environ.get(CACHE_ENV, "")
    if value.strip().lower() == "off":
        return None
    if value:
        return Path(value).expanduser() / "pixels"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "nas" / "pixels"


def content_key(paths: Sequence[str], what: str) -> str | None:
    """The cache key of ``what`` (``"headers"``, ``"pixels 37"``) read from ``paths``: their paths, sizes and
    modification times, the decoding and Pillow's version; None when a file cannot be stat'ed (it is then
    read, and fails, as usual)."""
    digest = hashlib.sha256(f"{what}\n{DECODE_VERSION}\nPillow {PIL.__version__}\n{len(paths)}\n".encode())
    try:
        for path in paths:
            st = os.stat(path)
            digest.update(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    except OSError:
        return None
    return digest.hexdigest()[:40]


def load_pixels(key: str, count: int, size: int) -> tuple[np.ndarray, list[tuple[int, str]]] | None:
    """``(pixels, failed)`` of entry ``key`` if it exists and holds ``count`` squares of ``size``; else None.

    ``failed`` lists ``(row, reason)`` of the files that could not be decoded (their rows are unused).
    """
    root = cache_root()
    if root is None:
        return None
    try:
        meta = json.loads((root / f"{key}.json").read_text(encoding="utf-8"))
        if meta.get("shape") != [count, size, size, 3]:
            return None
        pixels = np.load(root / f"{key}.npy", allow_pickle=False)
    except (OSError, ValueError):  # absent, being replaced, or damaged: decode again
        return None
    if pixels.dtype != np.uint8 or list(pixels.shape) != meta["shape"]:
        return None
    return pixels, [(int(row), str(reason)) for row, reason in meta.get("failed", [])]


def save_pixels(key: str, pixels: np.ndarray, failed: Sequence[tuple[int, str]]) -> bool:
    """Store an entry (the pixels first, the JSON that makes it visible last); False when the cache is off
    or not writable (the command goes on without it)."""
    root = cache_root()
    if root is None:
        return False
    try:
        root.mkdir(parents=True, exist_ok=True)
        with atomic_write(root / f"{key}.npy", "wb") as handle:
            np.save(handle, np.ascontiguousarray(pixels), allow_pickle=False)
        with atomic_write(root / f"{key}.json") as handle:
            json.dump({"shape": list(pixels.shape), "decode": DECODE_VERSION,
                       "failed": [[row, reason] for row, reason in failed]}, handle)
    except OSError:
        return False
    return True


#: A file's header facts ``(width, height, mode)``, or why it cannot be used.
Header = tuple[int, int, str] | str


def load_headers(key: str, count: int) -> list[Header] | None:
    """The ``count`` header facts of entry ``key``, or None when absent or damaged."""
    root = cache_root()
    if root is None:
        return None
    try:
        rows = json.loads((root / f"{key}.headers.json").read_text(encoding="utf-8"))
        if not isinstance(rows, list) or len(rows) != count:
            return None
        return [row if isinstance(row, str) else (int(row[0]), int(row[1]), str(row[2])) for row in rows]
    except (OSError, ValueError, TypeError, IndexError):
        return None


def save_headers(key: str, headers: Sequence[Header]) -> bool:
    """Store the header facts of a folder's files; False when the cache is off or not writable."""
    root = cache_root()
    if root is None:
        return False
    try:
        root.mkdir(parents=True, exist_ok=True)
        with atomic_write(root / f"{key}.headers.json") as handle:
            json.dump([h if isinstance(h, str) else list(h) for h in headers], handle)
    except OSError:
        return False
    return True
