"""What a returned image can do: give its bytes, save itself, open in Pillow, show in Jupyter.

``ImageResultMixin`` is mixed into ``StepFunImage`` and ``ImagesResultMixin`` into
``StepFunImagesResponse`` (types.py); both only read the models' fields.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import html
import os
import re
import tempfile
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._download import DEFAULT_MAX_BYTES, adownload, download, url_expires_at
from ._exceptions import ContentFilteredError
from ._fit import require_pillow
from ._metadata import ImageMetadata, embed_png_metadata, sidecar_path
from ._sniff import MIME_TYPES, sniff

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from .types import StepFunImage

__all__ = ["ImageResultMixin", "ImagesResultMixin", "atomic_write", "default_filename"]

_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "gif": ".gif"}
_SLUG_CHARS = 48


class ContentFilteredImageError(ContentFilteredError, ValueError):
    """Reading a ``content_filtered`` image: StepFun blocked it, there is nothing usable to read."""


def slugify(text: str, limit: int = _SLUG_CHARS) -> str:
    """Lower-case words joined by ``-``; letters of any script are kept (``一只猫`` stays)."""
    text = unicodedata.normalize("NFKC", text).lower()
    slug = re.sub(r"[^\w]+", "-", text, flags=re.UNICODE).strip("-_")
    slug = slug[:limit].rstrip("-_")
    return slug or "image"


def default_filename(image: StepFunImage, data: bytes) -> str:
    """``<seed>-<prompt slug>.<ext>``, e.g. ``1764275706-a-cat-in-a-hat.png``."""
    context = image._context or {}
    prompt = context.get("prompt")
    slug = slugify(prompt) if isinstance(prompt, str) else "image"
    seed = image.seed if image.seed is not None else context.get("seed")
    stem = f"{seed}-{slug}" if seed is not None else slug
    return stem + _EXTENSIONS.get(sniff(data[:64]).format or "", ".png")


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: a crash mid-write never leaves a
    half-written file under the final name (the temporary file is removed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def _is_directory_target(path: Path, raw: str | os.PathLike[str]) -> bool:
    text = os.fspath(raw)
    return path.is_dir() or text.endswith(("/", os.sep)) or (not path.exists() and not path.suffix)


def _unique(path: Path) -> Path:
    """``path``, or ``name-2.png``, ``name-3.png``, ... if it exists: never overwrite another image."""
    if not path.exists():
        return path
    for number in range(2, 10_000):
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"too many files named like {path}")


class ImageResultMixin:
    """Helpers of one returned image (``response.data[i]``)."""

    if TYPE_CHECKING:
        b64_json: str | None
        url: str | None
        seed: int | None
        finish_reason: str | None
        _context: dict[str, Any]
        _data: bytes | None

        @property
        def content_filtered(self) -> bool: ...

    # --- bytes ---------------------------------------------------------------------------------

    def _cached(self) -> bytes | None:
        if self._data is not None:
            return self._data
        if self.b64_json is not None:
            try:
                self._data = base64.b64decode(self.b64_json)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"b64_json is not valid base64: {exc}") from None
            return self._data
        return None

    def _check_usable(self) -> None:
        if self.content_filtered:
            index = (self._context or {}).get("index", 0)
            raise ContentFilteredImageError([index if isinstance(index, int) else 0])
        if self.b64_json is None and self.url is None:
            raise ValueError("this image has neither b64_json nor url")

    def read(self, *, max_bytes: int = DEFAULT_MAX_BYTES, timeout: float | None = None) -> bytes:
        """The image file's bytes: ``b64_json`` decoded, or the ``url`` downloaded (once; cached).

        Downloads are https only (http on loopback), capped at ``max_bytes``; an expired URL
        raises ``ImageURLExpiredError`` saying when it expired.
        """
        self._check_usable()
        data = self._cached()
        if data is None:
            assert self.url is not None
            kwargs: dict[str, Any] = {"max_bytes": max_bytes}
            if timeout is not None:
                kwargs["timeout"] = timeout
            data = self._data = download(self.url, **kwargs)
        return data

    async def aread(self, *, max_bytes: int = DEFAULT_MAX_BYTES, timeout: float | None = None) -> bytes:
        """Async :meth:`read`."""
        self._check_usable()
        data = self._cached()
        if data is None:
            assert self.url is not None
            kwargs: dict[str, Any] = {"max_bytes": max_bytes}
            if timeout is not None:
                kwargs["timeout"] = timeout
            data = self._data = await adownload(self.url, **kwargs)
        return data

    # --- provenance ----------------------------------------------------------------------------

    @property
    def metadata(self) -> ImageMetadata:
        """The request that made this image (what ``save()`` stores in the file)."""
        return ImageMetadata.from_context(self._context or {}, seed=self.seed)

    # --- saving --------------------------------------------------------------------------------

    def _target(self, path: str | os.PathLike[str], data: bytes) -> Path:
        target = Path(path).expanduser()
        if _is_directory_target(target, path):
            return _unique(target / default_filename(self, data))  # type: ignore[arg-type]
        return target

    def _write(self, target: Path, data: bytes, metadata: bool) -> Path:
        if metadata and self._context:
            if sniff(data[:64]).format == "png":
                data = embed_png_metadata(data, self.metadata)
            else:
                atomic_write(sidecar_path(target), self.metadata.to_json().encode("utf-8"))
        atomic_write(target, data)
        return target

    def save(self, path: str | os.PathLike[str] = ".", *, metadata: bool = True) -> Path:
        """Write the image to ``path`` and return where it went.

        ``path`` is a file name, or a directory (existing, ending in ``/``, or a new name without a
        suffix) in which the file is
        named ``<seed>-<prompt slug>.<ext>`` (never overwriting another file). The write is atomic
        (temp file + rename). PNGs carry the request in a text chunk (``read_metadata()`` reads
        it); other formats get a ``<name>.json`` sidecar. ``metadata=False`` stores nothing extra.
        """
        data = self.read()
        return self._write(self._target(path, data), data, metadata)

    async def asave(self, path: str | os.PathLike[str] = ".", *, metadata: bool = True) -> Path:
        """Async :meth:`save` (the file is written in a worker thread)."""
        data = await self.aread()
        target = self._target(path, data)
        return await asyncio.to_thread(self._write, target, data, metadata)

    # --- Pillow and Jupyter --------------------------------------------------------------------

    def to_pil(self) -> PILImage:
        """The image as a ``PIL.Image.Image`` (needs the ``[pil]`` extra)."""
        import io

        image_module = require_pillow("to_pil()")
        image = image_module.open(io.BytesIO(self.read()))
        image.load()
        return image  # type: ignore[no-any-return]

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """Jupyter shows the image: the ``b64_json`` string as is (no decoding or re-encoding),
        or an ``<img>`` tag pointing at the URL."""
        text = repr(self)
        if self.content_filtered:
            return {"text/plain": f"{text} (content_filtered by StepFun moderation: no image)"}
        if self.b64_json is not None:
            head = base64.b64decode(_head_chars(self.b64_json), validate=False)
            mime = MIME_TYPES.get(sniff(head).format or "png", "image/png")
            return {mime: self.b64_json, "text/plain": text}
        if self.url is not None:
            prompt = (self._context or {}).get("prompt")
            alt = html.escape(prompt if isinstance(prompt, str) else "StepFun image", quote=True)
            bundle = f'<img src="{html.escape(self.url, quote=True)}" alt="{alt}" style="max-width:100%"/>'
            if self.expired:
                bundle += f"<p>(this URL expired at {self.expires_at:%Y-%m-%d %H:%M:%S} UTC)</p>"
            return {"text/html": bundle, "text/plain": text}
        return {"text/plain": text}

    # --- URL expiry ----------------------------------------------------------------------------

    @property
    def expires_at(self) -> dt.datetime | None:
        """When the result URL stops working (UTC), from its ``X-Tos-Date`` + ``X-Tos-Expires``;
        ``None`` for ``b64_json`` results or URLs that do not say."""
        return url_expires_at(self.url) if self.url else None

    @property
    def expired(self) -> bool:
        """True once ``expires_at`` has passed (a ``b64_json`` result never expires)."""
        expires_at = self.expires_at
        return expires_at is not None and dt.datetime.now(dt.timezone.utc) >= expires_at


def _head_chars(b64: str) -> str:
    head = b64[:88].strip()
    return head[: len(head) - len(head) % 4]


class ImagesResultMixin:
    """Helpers of a whole response (``StepFunImagesResponse``)."""

    if TYPE_CHECKING:
        data: list[StepFunImage] | None

    def _usable(self) -> list[StepFunImage]:
        images = list(self.data or [])
        filtered = [index for index, image in enumerate(images) if image.content_filtered]
        if filtered:
            warnings.warn(
                f"skipping image(s) {filtered}: content_filtered by StepFun moderation", UserWarning, stacklevel=3
            )
        return [image for image in images if not image.content_filtered]

    def save_all(self, directory: str | os.PathLike[str] = ".", *, metadata: bool = True) -> list[Path]:
        """Save every usable image into ``directory`` (created if missing); the paths written.
        ``content_filtered`` images are skipped with a warning."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        return [image.save(target, metadata=metadata) for image in self._usable()]

    async def asave_all(self, directory: str | os.PathLike[str] = ".", *, metadata: bool = True) -> list[Path]:
        """Async :meth:`save_all` (downloads run concurrently)."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        images = self._usable()
        datas = await asyncio.gather(*(image.aread() for image in images))
        del datas  # cached on each image; saving below reuses them
        paths = []
        for image in images:
            paths.append(await image.asave(target, metadata=metadata))
        return paths

    def raise_for_content_filter(self) -> Any:
        """Raise ``ContentFilteredError`` if any image was ``content_filtered``; else return self."""
        filtered: Sequence[int] = [i for i, image in enumerate(self.data or []) if image.content_filtered]
        if filtered:
            raise ContentFilteredError(filtered, response=self)
        return self
