"""The sizes grukit refuses beyond when it reads a file, named in one place.

A GRU that fits a microcontroller, and the data that calibrates and scores it, are kilobytes to megabytes.
These limits are orders of magnitude above that and far below what would exhaust the machine, so a truncated,
wrong or malicious file is refused in a fraction of a second with the limit named, instead of filling memory:

- ``MAX_MODEL_BYTES``: a model file (.onnx, .pt2, .keras, .tflite) on disk.
- ``MAX_DATA_BYTES``: a data file (.npz) on disk, and its arrays once decompressed.
- ``MAX_UNPACKED_BYTES``: everything inside a model archive (.keras, .pt2) once decompressed, so a zip bomb
  (a small file that inflates to gigabytes) is refused from its directory, before anything is inflated.

Archives are read in memory, never extracted: a member named ``../x`` or ``/etc/x`` cannot write anywhere, and
is refused all the same, as a sign of a crafted file.
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

from grukit.core.errors import BadInputError

MiB = 1 << 20
MAX_MODEL_BYTES = 256 * MiB
MAX_UNPACKED_BYTES = 1024 * MiB
MAX_DATA_BYTES = 2048 * MiB


def _size_text(n: int) -> str:
    return f"{n / MiB:,.0f} MiB" if n >= MiB else f"{n:,} bytes"


def check_file_size(path: Path, limit: int, what: str) -> None:
    """BadInputError unless the file at path holds at most limit bytes."""
    size = path.stat().st_size
    if size > limit:
        raise BadInputError(f"{path}: {_size_text(size)} is more than grukit reads for {what} "
                            f"({_size_text(limit)}, grukit.core.limits)")


def check_archive(path: Path, limit: int, what: str) -> None:
    """BadInputError if the zip archive at path would inflate beyond limit bytes or names a member outside
    itself. A file that is not a zip archive passes: its reader says what is wrong with it."""
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, OSError):
        return
    total = 0
    for m in members:
        name = PurePosixPath(m.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or ":" in m.filename:
            raise BadInputError(f"{path}: refused: the archive holds a member named {m.filename!r}, outside "
                                "the archive (a crafted file)")
        total += m.file_size
        if total > limit:
            raise BadInputError(f"{path}: inflates to more than grukit reads for {what} ({_size_text(limit)} "
                                "unpacked, grukit.core.limits): refused before unpacking")
