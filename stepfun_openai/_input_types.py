"""What a request takes as an image: ``ImageInput`` and ``StyleReference`` (re-exported by ``types``).

Apart from the response models so that provenance (``_metadata.py``) can rebuild a request's
arguments without importing them: data flows types -> _results -> _metadata, never back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from os import PathLike

__all__ = ["ImageInput", "StyleReference"]

ImageInput = Union[str, "PathLike[str]", bytes, bytearray, memoryview, IO[bytes], Any]
"""An image going in: an http(s) URL (sent as is), a ``data:`` URL, bare base64, a file path
(``str`` or ``Path``), raw bytes, a binary file object, or (with Pillow) a ``PIL.Image.Image``."""


@dataclass(frozen=True)
class StyleReference:
    """``style_reference`` for ``images.generate`` (step-1x-medium): the image whose style to borrow
    and how strongly (``weight`` in (0, 2], default 1; 0.5-1.5 recommended, higher leaks content)."""

    image: ImageInput
    weight: float | None = None
