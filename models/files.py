"""Files the tools write and check: atomic writes of bytes, JSON and PNG, and sha256 of a file.

Here, at the bottom of the import graph, so that every floor (weights in ``models``, the research tools in
``pipeline``) uses the same few lines. An atomic write goes to a hidden temporary name in the target's
folder (``.<name>.<random>.tmp``) and is renamed over the target when complete: a reader sees the old
file or the new one, never half of one, and a failed write leaves neither a temporary file nor a changed
target. New files get the usual permissions (0666 less the umask), as ``open(path, "w")`` would give.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` to fill a temporary file beside ``path`` (it exists, empty), then rename it over
    ``path``; the folder is made when missing. Whatever ``write`` raises leaves ``path`` as it was."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:  # mode 0666: the kernel applies the umask, as for any new file
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """``data`` to ``path``, atomically (module docstring)."""
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_json_atomic(path: str | Path, data: Any) -> None:
    """``data`` as indented JSON (NaN refused: it is not JSON), atomically, ending in a newline."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def png_bytes(image: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """PNG of ``(H, W, 3) uint8`` RGB (or ``(H, W)`` grey): the same pixels give the same bytes. ``text``:
    tEXt chunks (key → value), e.g. the synthetic tag of a picture swapstream made."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = None
    if text:
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def synthetic_png(image: np.ndarray, what: str, version: str) -> bytes:
    """:func:`png_bytes` with the text chunks that say the picture is synthetic (the videos' container
    tag, for pictures): ``Software`` ``swapstream <version>``, ``Comment`` ``synthetic: <what> by swapstream
    <version>``."""
    comment = f"synthetic: {what} by swapstream {version}"
    return png_bytes(image, {"Software": f"swapstream {version}", "Comment": comment})


def write_png(path: str | Path, image: np.ndarray) -> None:
    """``(H, W, 3) uint8`` RGB (or ``(H, W)`` grey) as a PNG file, atomically."""
    write_bytes_atomic(path, png_bytes(image))


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def sha256_remembered(path: str | Path) -> str:
    """:func:`sha256_of`, remembered within this process while the file's size and mtime stay the same
    (a benchmark hashes the same videos and photos for every method)."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = sha256_of(path)
    return _SHA_MEMO[key]
