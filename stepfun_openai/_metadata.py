"""Provenance: how an image was made, stored in the image file itself.

A saved PNG carries the request that made it in an ``iTXt`` chunk (keyword ``stepfun-openai``,
UTF-8 JSON) spliced in right after ``IHDR``: the pixels are never decoded or re-encoded. Other
formats get the same JSON in a sidecar file (``cat.jpg`` -> ``cat.jpg.json``). Standard library only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _png
from ._input_types import StyleReference
from ._sniff import sniff
from ._urls import is_http_url

__all__ = [
    "METADATA_KEYWORD",
    "ImageMetadata",
    "embed_png_metadata",
    "is_own_sidecar",
    "png_text_chunks",
    "read_metadata",
    "regenerate_kwargs",
    "sidecar_path",
    "with_provenance",
    "written_by_package",
]

METADATA_KEYWORD = "stepfun-openai"
"""The PNG text keyword (and the sidecar's ``"format"``) under which the request is stored."""

# Request fields, in the order they are written; anything else the request carried follows them.
_ORDER = (
    "endpoint",
    "model",
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "cfg_scale",
    "size",
    "source_weight",
    "style_reference",
    "text_mode",
    "response_format",
    "source_url",
    "source_image",
    "image",
    "created",
    "trace_id",
)
_IMAGE_FIELDS = ("source_url", "source_image", "image")
_METHODS = {"generations": "generate", "image2image": "image2image", "edits": "edit"}
# Form fields of /images/edits go as strings; these turn them back into numbers and booleans.
_INTS = ("seed", "steps", "n")
_FLOATS = ("cfg_scale", "source_weight")
_NOT_PARAMETERS = ("endpoint", "created", "trace_id", "index", "generator", "format")


@dataclass(frozen=True)
class ImageMetadata:
    """The request behind an image, as stored by ``StepFunImage.save()``.

    ``params`` holds every field (``model``, ``prompt``, ``seed`` (the one the server used),
    ``steps``, ``cfg_scale``, ``size``, ``endpoint``, ``created``, ``trace_id``, ...). Inline image
    payloads are never stored: a source image appears as ``"<inline image, N base64 chars>"``
    (a URL source is kept, with signed query values such as ``X-Tos-Signature`` as ``REDACTED``).
    """

    params: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)

    @property
    def endpoint(self) -> str | None:
        """``generations``, ``image2image`` or ``edits``."""
        value = self.params.get("endpoint")
        return value if isinstance(value, str) else None

    @property
    def method(self) -> str:
        """The ``client.images`` method that makes such an image: ``generate``, ``image2image`` or ``edit``."""
        return _METHODS.get(self.endpoint or "generations", "generate")

    @property
    def source_param(self) -> str | None:
        """The parameter whose image must be supplied again to regenerate (``source_url`` for
        image2image, ``image`` for edits, ``source_image`` for a generation from an inline source),
        or ``None`` when the request needs no image or used a URL (kept in the metadata)."""
        endpoint = self.endpoint or "generations"
        if endpoint == "edits":
            return "image"
        name = "source_url" if endpoint == "image2image" else "source_image"
        value = self.params.get(name)
        return name if value is not None and not is_http_url(value) else None

    @property
    def needs_source(self) -> bool:
        """True when regenerating needs an image you must supply again (see ``source_param``)."""
        return self.source_param is not None or self._inline_style is not None

    @property
    def _inline_style(self) -> Mapping[str, Any] | None:
        style = self.params.get("style_reference")
        if isinstance(style, Mapping) and not is_http_url(style.get("source_url", style.get("image"))):
            return style
        return None

    def to_kwargs(self, *, source: Any = None, style_reference: Any = None) -> dict[str, Any]:
        """Keyword arguments that make this image again: ``getattr(client.images, meta.method)(**kwargs)``.

        With the same model, prompt, seed and parameters, StepFun (and the emulator) return the
        same image. Source images are not stored in the file: for image2image, edits and
        generations from an inline ``source_image``, pass the image again as ``source=`` (and an
        inline style reference's image as ``style_reference=``); otherwise this raises ``ValueError``.
        """
        kwargs = {
            key: _restore_type(key, value)
            for key, value in self.params.items()
            if key not in _NOT_PARAMETERS and value is not None
        }
        source_param = self.source_param
        if source_param is not None:
            if source is None:
                raise ValueError(
                    f"this image was made by images.{self.method} from a source image, which is not stored in "
                    f"the file; pass it again: to_kwargs(source=<path, bytes or URL>) (it goes in {source_param!r})"
                )
            kwargs[source_param] = source
        elif source is not None:
            raise ValueError(f"images.{self.method} made this image from no inline source; source= is not needed")
        style = kwargs.pop("style_reference", None)
        if isinstance(style, Mapping):
            image = style.get("source_url", style.get("image"))
            if self._inline_style is not None:
                if style_reference is None:
                    raise ValueError(
                        "this image used an inline style reference, which is not stored in the file; "
                        "pass its image again: to_kwargs(style_reference=<path, bytes or URL>)"
                    )
                image = style_reference
            kwargs["style_reference"] = StyleReference(image=image, weight=style.get("weight"))
        return kwargs

    def to_json(self) -> str:
        return json.dumps({"format": METADATA_KEYWORD, **self.params}, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_context(cls, context: Mapping[str, Any], *, seed: int | None = None) -> ImageMetadata:
        """From ``StepFunImage._context`` (the request as sent, minus image payloads)."""
        params: dict[str, Any] = {}
        for key in _ORDER:
            if key in context and context[key] is not None:
                params[key] = context[key]
        for key, value in context.items():
            if key not in params and key != "index" and value is not None:
                params[key] = value
        if seed is not None:
            params["seed"] = seed
        try:
            from . import __version__

            params["generator"] = f"stepfun-openai {__version__}"
        except ImportError:  # pragma: no cover - partial install
            pass
        return cls(params)


def regenerate_kwargs(metadata: ImageMetadata, *, source: Any = None, style_reference: Any = None) -> dict[str, Any]:
    """``metadata.to_kwargs(...)`` as a function."""
    return metadata.to_kwargs(source=source, style_reference=style_reference)


def _restore_type(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if key in _INTS:
            return int(value)
        if key in _FLOATS:
            return float(value)
    except ValueError:
        return value
    if key == "text_mode" and value in ("true", "false"):
        return value == "true"
    return value


# --- PNG ---------------------------------------------------------------------------------------


def embed_png_metadata(png: bytes, metadata: ImageMetadata | Mapping[str, Any]) -> bytes:
    """``png`` with the request in an ``iTXt`` chunk right after ``IHDR`` (an older chunk of ours
    is replaced). The image data is copied byte for byte, never decoded."""
    meta = metadata if isinstance(metadata, ImageMetadata) else ImageMetadata(dict(metadata))
    return _png.set_text(png, METADATA_KEYWORD, meta.to_json())


def with_provenance(data: bytes, context: Mapping[str, Any] | None, seed: int | None) -> tuple[bytes, bytes | None]:
    """An image file's bytes with the request that made it (``context``, a ``StepFunImage``'s)
    stored in them (a PNG text chunk), or the bytes as they are and a ``.json`` sidecar's (other
    formats); as they are when there is no request."""
    if not context:
        return data, None
    metadata = ImageMetadata.from_context(context, seed=seed)
    if sniff(data[:64]).format == "png":
        return embed_png_metadata(data, metadata), None
    return data, metadata.to_json().encode("utf-8")


def png_text_chunks(png: bytes) -> dict[str, str]:
    """Every ``tEXt``/``iTXt``/``zTXt`` chunk of a PNG, keyword -> text (decoded, not the image)."""
    return _png.text_chunks(png)


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Where the metadata of a non-PNG image goes: ``cat.jpg`` -> ``cat.jpg.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def read_metadata(source: str | os.PathLike[str] | bytes) -> ImageMetadata | None:
    """The request that made an image saved by ``StepFunImage.save()``.

    ``source`` is a path (a PNG's text chunk is read; for other formats the ``.json`` sidecar)
    or PNG bytes. ``None`` when the image carries no such metadata.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        text = _png.read_text(bytes(source), METADATA_KEYWORD)
        return _parse(text) if text is not None else None
    path = Path(source)
    with open(path, "rb") as handle:
        if handle.read(len(_png.SIGNATURE)) != _png.SIGNATURE:
            return _read_sidecar(sidecar_path(path))
        # Walked, not read whole: only chunk heads and our text chunk are read, however large the file.
        text = _png.read_text(handle, METADATA_KEYWORD)
    return _parse(text) if text is not None else None


def is_own_sidecar(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a sidecar this package wrote (JSON whose ``"format"`` is
    ``stepfun-openai``): only such a file is replaced when an image is saved again under its name."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_png.MAX_TEXT_BYTES + 1)
        value = json.loads(raw.decode("utf-8")) if len(raw) <= _png.MAX_TEXT_BYTES else None
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(value, dict) and value.get("format") == METADATA_KEYWORD


def written_by_package(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a file this package wrote: a PNG carrying its provenance, one of its
    sidecars, or another image whose sidecar is its own. The batch replaces only such files."""
    try:
        with open(path, "rb") as handle:
            is_png = handle.read(len(_png.SIGNATURE)) == _png.SIGNATURE
        if is_png:
            return read_metadata(path) is not None
    except OSError:
        return False
    return is_own_sidecar(path) or is_own_sidecar(sidecar_path(path))


def _read_sidecar(sidecar: Path) -> ImageMetadata | None:
    """A sidecar's metadata; ``None`` when there is none, or it is larger than any we write."""
    try:
        with open(sidecar, "rb") as handle:
            raw = handle.read(_png.MAX_TEXT_BYTES + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    if len(raw) > _png.MAX_TEXT_BYTES:
        return None
    return _parse(raw.decode("utf-8", "replace"))


def _parse(text: str) -> ImageMetadata | None:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return None
    if not isinstance(value, dict):
        return None
    value.pop("format", None)
    return ImageMetadata(value)
