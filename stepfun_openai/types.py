"""Typed StepFun request and response objects."""

from __future__ import annotations

# Response fields use typing.Optional/List, not ``X | None``: openai 3.0's construct_type caches
# unions in a WeakKeyDictionary, and ``types.UnionType`` cannot be weakly referenced.
from typing import Any, List, Literal, Optional, Union

from openai import BaseModel
from openai.types import Image as _OpenAIImage
from openai.types import ImagesResponse as _OpenAIImagesResponse
from pydantic import PrivateAttr, model_validator

from ._cost import Cost
from ._input_types import ImageInput, StyleReference
from ._results import ImageResultMixin, ImagesResultMixin

__all__ = ["Account", "Cost", "ImageInput", "StepFunImage", "StepFunImagesResponse", "StyleReference"]


def ensure_private(model: Any) -> None:
    """openai builds responses with ``construct`` (no validation), which leaves pydantic's private
    attributes uninitialised; give them their defaults so helpers can rely on them."""
    if getattr(model, "__pydantic_private__", None) is None:
        plan = _PRIVATE_DEFAULTS.get(type(model))
        if plan is None:  # once per class: pydantic's get_default() costs microseconds a call
            static = {}
            factories = []
            for name, attr in type(model).__private_attributes__.items():
                if attr.default_factory is not None:
                    factories.append((name, attr.default_factory))
                else:
                    static[name] = attr.get_default()
            plan = _PRIVATE_DEFAULTS[type(model)] = (static, tuple(factories))
        values = dict(plan[0])
        for name, factory in plan[1]:
            values[name] = factory()
        object.__setattr__(model, "__pydantic_private__", values)


_PRIVATE_DEFAULTS: dict[type, tuple[dict[str, Any], tuple[tuple[str, Any], ...]]] = {}


class Account(BaseModel):
    """The account behind the API key, in its own currency (yuan on the mainland host, dollars on
    the international one). ``balance`` is what is available now; a ``postpaid`` account is billed
    afterwards, so its balance may be negative and does not limit spending."""

    object: Optional[str] = None
    type: Optional[Union[Literal["prepaid", "postpaid"], str]] = None
    balance: Optional[float] = None
    total_cash_balance: Optional[float] = None
    total_voucher_balance: Optional[float] = None

    @property
    def prepaid(self) -> bool:
        """Whether spending is limited by ``balance`` (a postpaid account is billed afterwards)."""
        return self.type != "postpaid"


class StepFunImage(ImageResultMixin, _OpenAIImage):
    """One generated image: openai's ``Image`` plus StepFun's ``seed`` and ``finish_reason``, and
    helpers: ``read()``, ``save()``, ``to_pil()``, ``expires_at``, inline display in Jupyter."""

    seed: Optional[int] = None
    """The seed used: the request's, or the one StepFun chose at random."""

    finish_reason: Optional[Union[Literal["success", "content_filtered"], str]] = None
    """``success``, or ``content_filtered`` (generated but blocked by moderation: unusable)."""

    image: Optional[str] = None
    """Legacy name of ``b64_json`` in an older StepFun doc; copied into ``b64_json`` on parse."""

    _context: dict[str, Any] = PrivateAttr(default_factory=dict)
    _data: bytes | None = PrivateAttr(default=None)
    _cost: Cost | None = PrivateAttr(default=None)

    @property
    def cost(self) -> Cost:
        """What this image cost at the catalog's price (``content_filtered`` images are billed
        too), or an unknown :class:`Cost` saying why (no published price, unknown region, Step Plan)."""
        return self._cost if self._cost is not None else Cost(None, None, note="not from a StepFun client call")

    @model_validator(mode="before")
    @classmethod
    def _legacy_image_field(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("b64_json") is None and data.get("image") is not None:
            data = {**data, "b64_json": data["image"]}
        return data

    @property
    def content_filtered(self) -> bool:
        """True when StepFun's moderation marked this image ``content_filtered``."""
        return self.finish_reason == "content_filtered"


class StepFunImagesResponse(ImagesResultMixin, _OpenAIImagesResponse):
    """The response of all three image endpoints. ``id`` and ``created`` may be absent.
    ``save_all(directory)`` saves every image; ``raise_for_content_filter()`` checks moderation."""

    created: Optional[int] = None  # type: ignore[assignment]
    id: Optional[str] = None
    data: Optional[List[StepFunImage]] = None  # type: ignore[assignment]

    _trace_id: str | None = PrivateAttr(default=None)

    @classmethod
    def build(cls, *, response: Any, data: object) -> StepFunImagesResponse:
        """How the SDK turns the JSON of an answer into this type (its ``ModelBuilderProtocol``).

        pydantic-core validates it in strict mode, several times faster than the SDK's pure-Python
        ``construct``; an answer strict validation refuses (a seed as a string, a ``data`` that is
        not a list...) is constructed the SDK's way, as before, so that the response checks name
        what is wrong (a ``MalformedResponseError``) instead of a pydantic error."""
        try:
            return cls.model_validate(data, strict=True)
        except (ValueError, TypeError, RecursionError):  # a pydantic ValidationError is a ValueError
            from openai._models import construct_type

            # Not always a model (a JSON list stays a list): finish_images_response refuses it by name.
            built: Any = construct_type(type_=cls, value=data)
            return built  # type: ignore[no-any-return]

    @property
    def trace_id(self) -> str | None:
        """StepFun's ``X-Trace-Id`` for this call (support asks for it)."""
        return self._trace_id

    @property
    def images(self) -> list[StepFunImage]:
        """``data``, or an empty list when the response had none."""
        return list(self.data or [])

    @property
    def cost(self) -> Cost:
        """What this response's images cost together (see :attr:`StepFunImage.cost`)."""
        return Cost.total(image.cost for image in self.images)
