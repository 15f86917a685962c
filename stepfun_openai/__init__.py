"""StepFun image generation as a first-class citizen of the OpenAI Python SDK.

``from stepfun_openai import StepFun`` in place of ``from openai import OpenAI``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import catalog as catalog
    from . import types as types
    from ._client import API_KEY_ENV_VARS, DEFAULT_TIMEOUT, AsyncStepFun, MissingAPIKeyError, StepFun
    from ._download import ImageDownloadError, ImageURLExpiredError
    from ._exceptions import (
        ContentBlockedError,
        ContentFilteredError,
        InsufficientBalanceError,
        MalformedResponseError,
        PartialImagesError,
        QuotaExceededError,
        StepFunRateLimitError,
        StepFunValidationError,
        get_trace_id,
    )
    from ._fit import ImageFitWarning
    from ._metadata import ImageMetadata, read_metadata, regenerate_kwargs
    from ._retry import RetryPolicy
    from .catalog import (
        DEFAULT_BASE_URL,
        INTERNATIONAL_BASE_URL,
        INTERNATIONAL_STEP_PLAN_BASE_URL,
        STEP_PLAN_BASE_URL,
    )
    from .types import Account, Cost, StepFunImage, StepFunImagesResponse, StyleReference

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "API_KEY_ENV_VARS": "._client",
    "DEFAULT_TIMEOUT": "._client",
    "AsyncStepFun": "._client",
    "MissingAPIKeyError": "._client",
    "StepFun": "._client",
    "ContentBlockedError": "._exceptions",
    "ContentFilteredError": "._exceptions",
    "InsufficientBalanceError": "._exceptions",
    "MalformedResponseError": "._exceptions",
    "PartialImagesError": "._exceptions",
    "QuotaExceededError": "._exceptions",
    "StepFunRateLimitError": "._exceptions",
    "StepFunValidationError": "._exceptions",
    "get_trace_id": "._exceptions",
    "RetryPolicy": "._retry",
    "ImageDownloadError": "._download",
    "ImageURLExpiredError": "._download",
    "ImageFitWarning": "._fit",
    "ImageMetadata": "._metadata",
    "read_metadata": "._metadata",
    "regenerate_kwargs": "._metadata",
    "DEFAULT_BASE_URL": ".catalog",
    "INTERNATIONAL_BASE_URL": ".catalog",
    "STEP_PLAN_BASE_URL": ".catalog",
    "INTERNATIONAL_STEP_PLAN_BASE_URL": ".catalog",
    "Account": ".types",
    "Cost": ".types",
    "StepFunImage": ".types",
    "StepFunImagesResponse": ".types",
    "StyleReference": ".types",
}
"""Every exported name loads its module on first use: ``import stepfun_openai`` (and so the
stdlib-only ``stepfun_openai.emulator`` and ``stepfun_openai.catalog``) never imports openai, and
``from stepfun_openai import StepFun`` costs about what ``from openai import OpenAI`` does."""

_LAZY_MODULES = frozenset({"catalog", "types"})


if not TYPE_CHECKING:  # type checkers see the imports above, and no catch-all __getattr__

    def __getattr__(name: str) -> Any:
        if name in _LAZY:
            value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        elif name in _LAZY_MODULES:
            value = importlib.import_module(f".{name}", __name__)
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_LAZY, *_LAZY_MODULES})


__all__ = [
    "API_KEY_ENV_VARS",
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "INTERNATIONAL_BASE_URL",
    "INTERNATIONAL_STEP_PLAN_BASE_URL",
    "STEP_PLAN_BASE_URL",
    "Account",
    "AsyncStepFun",
    "ContentBlockedError",
    "ContentFilteredError",
    "Cost",
    "ImageDownloadError",
    "ImageFitWarning",
    "ImageMetadata",
    "ImageURLExpiredError",
    "InsufficientBalanceError",
    "MalformedResponseError",
    "MissingAPIKeyError",
    "PartialImagesError",
    "QuotaExceededError",
    "RetryPolicy",
    "StepFun",
    "StepFunImage",
    "StepFunImagesResponse",
    "StepFunRateLimitError",
    "StepFunValidationError",
    "StyleReference",
    "__version__",
    "get_trace_id",
    "read_metadata",
    "regenerate_kwargs",
]
