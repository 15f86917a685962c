"""StepFun image generation as a first-class citizen of the OpenAI Python SDK.

``from stepfun_openai import StepFun`` in place of ``from openai import OpenAI``.
"""

from __future__ import annotations

from ._client import API_KEY_ENV_VARS, DEFAULT_TIMEOUT, AsyncStepFun, MissingAPIKeyError, StepFun
from ._download import ImageDownloadError, ImageURLExpiredError
from ._exceptions import (
    ContentBlockedError,
    ContentFilteredError,
    InsufficientBalanceError,
    MalformedResponseError,
    QuotaExceededError,
    StepFunRateLimitError,
    StepFunValidationError,
    get_trace_id,
)
from ._fit import ImageFitWarning
from ._metadata import ImageMetadata, read_metadata, regenerate_kwargs
from ._retry import RetryPolicy
from .catalog import DEFAULT_BASE_URL, INTERNATIONAL_BASE_URL, STEP_PLAN_BASE_URL
from .types import StepFunImage, StepFunImagesResponse, StyleReference

__version__ = "0.1.0"

__all__ = [
    "API_KEY_ENV_VARS",
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "INTERNATIONAL_BASE_URL",
    "STEP_PLAN_BASE_URL",
    "AsyncStepFun",
    "ContentBlockedError",
    "ContentFilteredError",
    "ImageDownloadError",
    "ImageFitWarning",
    "ImageMetadata",
    "ImageURLExpiredError",
    "InsufficientBalanceError",
    "MalformedResponseError",
    "MissingAPIKeyError",
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
