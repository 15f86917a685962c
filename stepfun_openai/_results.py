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
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._download import DEFAULT_MAX_BYTES, adownload, download, url_expires_at
from ._exceptions import ContentFilteredError, caller_stacklevel
from ._files import atomic_write, exclusive_write
from ._fit import MAX_DECODE_PIXELS, open_image, require_pillow
from ._metadata import ImageMetadata, is_own_sidecar, sidecar_path, with_provenance
from ._sniff import EXTENSIONS, ImageInfo, sniff
from ._urls import redact_url

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["ImageResultMixin", "ImagesResultMixin", "default_filename", "image_stem"]

_SLUG_CHARS = 48
_HEAD_BYTES = 64
"""Enough for a PNG, GIF or WebP header to give format and size (a JPEG's may need more: format only)."""
_HEAD_CHARS = _HEAD_BYTES // 3 * 4 + 4


class ContentFilteredImageError(ContentFilteredError, ValueError):
    """Reading a ``content_filtered`` image: StepFun blocked it, there is nothing usable to read."""


def slugify(text: str, limit: int = _SLUG_CHARS) -> str:
    """Lower-case words joined by ``-``; letters of any script are kept (``一只猫`` stays)."""
    text = unicodedata.normalize("NFKC", text).lower()
    slug = re.sub(r"[^\w]+", "-", text, flags=re.UNICODE).strip("-_")
    slug = slug[:limit].rstrip("-_")
    return slug or "image"


def image_stem(prompt: object, tag: object) -> str:
    """The one naming scheme for image files: ``<prompt slug>-<tag>``, e.g. ``a-cat-in-a-hat-7``.

    Used by ``save()`` into a folder, the CLI and the agent tools (``tag`` = the image's seed)
    and by the batch (``tag`` = the job's id: unique in the batch and the same on every run, so
    a resumed job rewrites its own file; a job's seed may be drawn anew on each run). The slug
    first groups files by prompt in a listing; the tag tells them apart. No prompt gives
    ``image-<tag>``, no tag just the slug."""
    slug = slugify(prompt) if isinstance(prompt, str) else "image"
    return f"{slug}-{tag}" if tag is not None and tag != "" else slug


def default_filename(image: ImageResultMixin) -> str:
    """``<prompt slug>-<seed>.<ext>`` (:func:`image_stem`), e.g. ``a-cat-in-a-hat-1764275706.png``."""
    context = image._context or {}
    seed = image.seed if image.seed is not None else context.get("seed")
    return image_stem(context.get("prompt"), seed) + image._extension()


def _is_directory_target(path: Path, raw: str | os.PathLike[str]) -> bool:
    text = os.fspath(raw)
    return path.is_dir() or text.endswith(("/", os.sep)) or (not path.exists() and not path.suffix)


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
            # A response's images were checked when it arrived (``_requests.finish_images_response``:
            # ``MalformedResponseError``); these checks are for an image built by hand.
            if len(self.b64_json) // 4 * 3 > DEFAULT_MAX_BYTES:
                raise ValueError(f"b64_json holds more than {DEFAULT_MAX_BYTES:,} bytes, the most a result may be")
            try:
                data = base64.b64decode(self.b64_json, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"b64_json is not valid base64: {exc}") from None
            if sniff(data[:_HEAD_BYTES]).format is None:
                raise ValueError(f"b64_json is not a PNG, JPEG, WebP or GIF image ({len(data)} bytes: {data[:12]!r})")
            self._data = data
            return data
        return None

    def _at_hand(self) -> bytes | None:
        """The bytes without I/O (``b64_json`` decoded, or an earlier download); ``None`` when the
        URL is still to be downloaded. Raises for a filtered image or one with nothing to read."""
        if self.content_filtered:
            index = (self._context or {}).get("index", 0)
            raise ContentFilteredImageError([index if isinstance(index, int) else 0])
        if self.b64_json is None and self.url is None:
            raise ValueError("this image has neither b64_json nor url")
        return self._cached()

    def _download_args(self, max_bytes: int, timeout: float | None) -> tuple[str, dict[str, Any]]:
        assert self.url is not None  # _at_hand found no b64_json, so there is a URL
        kwargs: dict[str, Any] = {"max_bytes": max_bytes}
        if timeout is not None:
            kwargs["timeout"] = timeout
        return self.url, kwargs

    def read(self, *, max_bytes: int = DEFAULT_MAX_BYTES, timeout: float | None = None) -> bytes:
        """The image file's bytes: ``b64_json`` decoded, or the ``url`` downloaded (once; cached).

        Downloads are https only (http on loopback), capped at ``max_bytes``; an expired URL
        raises ``ImageURLExpiredError`` saying when it expired.
        """
        data = self._at_hand()
        if data is None:
            url, kwargs = self._download_args(max_bytes, timeout)
            data = self._data = download(url, **kwargs)
        return data

    async def aread(self, *, max_bytes: int = DEFAULT_MAX_BYTES, timeout: float | None = None) -> bytes:
        """Async :meth:`read`."""
        data = self._at_hand()
        if data is None:
            url, kwargs = self._download_args(max_bytes, timeout)
            data = self._data = await adownload(url, **kwargs)
        return data

    def _head_info(self) -> ImageInfo:
        """Format and size from the image's first bytes: those of an earlier read, or the first
        base64 characters decoded (never the whole image); unknown for a URL not yet read."""
        if self._data is not None:
            return sniff(self._data[:_HEAD_BYTES])
        if self.b64_json is None:
            return ImageInfo(None, None, None)
        head = self.b64_json[:_HEAD_CHARS].strip()
        try:
            return sniff(base64.b64decode(head[: len(head) - len(head) % 4], validate=False))
        except (binascii.Error, ValueError):
            return ImageInfo(None, None, None)

    # --- provenance ----------------------------------------------------------------------------

    @property
    def metadata(self) -> ImageMetadata:
        """The request that made this image (what ``save()`` stores in the file)."""
        return ImageMetadata.from_context(self._context or {}, seed=self.seed)

    # --- saving --------------------------------------------------------------------------------

    def _target(self, path: str | os.PathLike[str]) -> tuple[Path, bool]:
        """Where to write, and whether that is a directory's default name (never overwritten)."""
        target = Path(path).expanduser()
        if _is_directory_target(target, path):
            return target / default_filename(self), True
        return target, False

    def _with_provenance(self, data: bytes) -> tuple[bytes, bytes | None]:
        """The file's bytes with the request stored in them (a PNG text chunk), or the bytes as
        they are and a ``.json`` sidecar's (other formats); as they are when there is no request."""
        return with_provenance(data, self._context, self.seed)

    def _extension(self) -> str:
        """``.png``, ``.jpg``, ``.webp`` or ``.gif``, from the image's first bytes."""
        return EXTENSIONS.get(self._head_info().format or "", ".png")

    def _write(self, path: str | os.PathLike[str], data: bytes, metadata: bool, *, exclusive: bool = False) -> Path:
        """``exclusive``: the name given is never replaced either (the CLI's names), as in a directory."""
        target, in_directory = self._target(path)
        sidecar: bytes | None = None
        if metadata:
            data, sidecar = self._with_provenance(data)
        if in_directory or exclusive:
            # The names are claimed and the files written in one step: concurrent saves into one
            # folder get distinct names (``-2``, ``-3``, ...) instead of overwriting each other,
            # and a name is taken only if its sidecar's is free too.
            return exclusive_write(target, data, (sidecar_path, sidecar) if sidecar is not None else None)
        if sidecar is not None:
            existing = sidecar_path(target)
            if os.path.lexists(existing) and not is_own_sidecar(existing):
                raise FileExistsError(
                    f"not saving {target}: its metadata would replace {existing}, which this package did not "
                    "write; move that file, save under another name, or pass metadata=False"
                )
            atomic_write(existing, sidecar)
        atomic_write(target, data)
        return target

    def save(self, path: str | os.PathLike[str] = ".", *, metadata: bool = True) -> Path:
        """Write the image to ``path`` and return where it went.

        ``path`` is a file name (an existing file is replaced), or a directory (existing, ending
        in ``/``, or a new name without a suffix) in which the file is named
        ``<prompt slug>-<seed>.<ext>``, or ``...-2.<ext>`` and so on: another file (or sidecar)
        is never overwritten, even by concurrent saves. The write is atomic (a complete temp file
        gets the final name). PNGs carry the request in a text chunk (``read_metadata()`` reads
        it); other formats get a ``<name>.json`` sidecar, which replaces only a sidecar this
        package wrote (any other file there raises ``FileExistsError``, and nothing is written).
        ``metadata=False`` stores nothing extra.
        """
        return self._write(path, self.read(), metadata)

    async def asave(self, path: str | os.PathLike[str] = ".", *, metadata: bool = True) -> Path:
        """Async :meth:`save` (the file is written in a worker thread)."""
        data = await self.aread()
        return await asyncio.to_thread(self._write, path, data, metadata)

    # --- Pillow and Jupyter --------------------------------------------------------------------

    def to_pil(self) -> PILImage:
        """The image as a ``PIL.Image.Image`` (needs the ``[pil]`` extra).

        At most ``_fit.MAX_DECODE_PIXELS`` (8192x8192) pixels are decoded: a result claiming more
        (a decompression bomb) raises ``ValueError`` from its header, before a pixel is decoded.
        """
        require_pillow("to_pil()")
        index = (self._context or {}).get("index", 0)

        def too_large(size: str, fmt: str | None) -> Exception:
            return ValueError(
                f"to_pil(): image {index} is {fmt or 'an image'} of {size}; at most {MAX_DECODE_PIXELS:,} "
                "pixels (8192x8192) are decoded (a decompression bomb?). read() or save() give the file as it is"
            )

        def undecodable(exc: Exception) -> Exception:
            return ValueError(f"to_pil(): Pillow cannot decode image {index} ({type(exc).__name__}: {exc})")

        return open_image(self.read(), too_large=too_large, undecodable=undecodable)  # type: ignore[no-any-return]

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """Jupyter shows the image: the ``b64_json`` string as is (no decoding or re-encoding),
        or an ``<img>`` tag pointing at the URL. The text is a one-line summary (the notebook
        would otherwise store the base64 a second time)."""
        text = self._summary()
        if self.content_filtered:
            return {"text/plain": text}
        if self.b64_json is not None:
            info = self._head_info()
            return {info.mime_type if info.format else "image/png": self.b64_json, "text/plain": text}
        if self.url is not None:
            prompt = (self._context or {}).get("prompt")
            alt = html.escape(prompt if isinstance(prompt, str) else "StepFun image", quote=True)
            bundle = f'<img src="{html.escape(self.url, quote=True)}" alt="{alt}" style="max-width:100%"/>'
            if self.expired:
                bundle += f"<p>(this URL expired at {self.expires_at:%Y-%m-%d %H:%M:%S} UTC)</p>"
            return {"text/html": bundle, "text/plain": text}
        return {"text/plain": text}

    def _summary(self) -> str:
        """``<StepFunImage 1024x1024 png, seed 7, b64_json 76 kB>``: what it is, not its bytes."""
        parts: list[str] = []
        if self.b64_json is not None and not self.content_filtered:
            info = self._head_info()
            if info.width and info.height:
                parts.append(f"{info.width}x{info.height} {info.format or 'image'}")
            elif info.format:
                parts.append(info.format)
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        if self.content_filtered:
            parts.append("content_filtered by StepFun moderation: no image")
        elif self.b64_json is not None:
            parts.append(f"b64_json {_size(len(self.b64_json))}")
        elif self.url is not None:
            parts.append(f"url {redact_url(self.url, keep_query=False)}")
        return f"<{type(self).__name__} {', '.join(parts)}>" if parts else f"<{type(self).__name__}>"

    def __repr_args__(self) -> Any:
        """Pydantic's repr without megabytes of base64: long ``b64_json``/``image`` values are
        shown truncated (the fields themselves are untouched)."""
        for name, value in super().__repr_args__():  # type: ignore[misc]
            if name in ("b64_json", "image") and isinstance(value, str) and len(value) > _REPR_CHARS:
                value = _Truncated(value)
            yield name, value

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


_REPR_CHARS = 64


class _Truncated:
    """Shown in a repr as ``'iVBORw0KGgo...' (102400 chars)``."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"{self.value[:_REPR_CHARS]!r}... ({len(self.value)} chars)"


def _size(chars: int) -> str:
    if chars >= 1_000_000:
        return f"{chars / 1_000_000:.1f} MB"
    return f"{round(chars / 1000)} kB" if chars >= 1000 else f"{chars} B"


class ImagesResultMixin:
    """Helpers of a whole response (``StepFunImagesResponse``)."""

    if TYPE_CHECKING:
        data: Sequence[ImageResultMixin] | None

    def _usable(self, directory: str | os.PathLike[str]) -> tuple[Path, list[ImageResultMixin]]:
        """``directory`` (created) and the images to save into it; ``content_filtered`` ones are
        skipped with a warning."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        images = list(self.data or [])
        filtered = [index for index, image in enumerate(images) if image.content_filtered]
        if filtered:
            warnings.warn(
                f"skipping image(s) {filtered}: content_filtered by StepFun moderation",
                UserWarning,
                stacklevel=caller_stacklevel(),
            )
        return target, [image for image in images if not image.content_filtered]

    def save_all(self, directory: str | os.PathLike[str] = ".", *, metadata: bool = True) -> list[Path]:
        """Save every usable image into ``directory`` (created if missing); the paths written.
        ``content_filtered`` images are skipped with a warning."""
        target, images = self._usable(directory)
        return [image.save(target, metadata=metadata) for image in images]

    async def asave_all(self, directory: str | os.PathLike[str] = ".", *, metadata: bool = True) -> list[Path]:
        """Async :meth:`save_all` (downloads run concurrently, then the files are written in turn)."""
        target, images = self._usable(directory)
        await asyncio.gather(*(image.aread() for image in images))  # cached on each image
        return [await image.asave(target, metadata=metadata) for image in images]

    def raise_for_content_filter(self) -> Any:
        """Raise ``ContentFilteredError`` if any image was ``content_filtered``; else return self."""
        filtered: Sequence[int] = [i for i, image in enumerate(self.data or []) if image.content_filtered]
        if filtered:
            raise ContentFilteredError(filtered, response=self)
        return self
