"""Many images at the account's rate limit: resumable, with a progress bar.

```python
from stepfun_openai import batch

result = batch.run(
    [{"prompt": "a lighthouse at dawn"}, {"prompt": "a lighthouse at dusk", "seed": 7}],
    out="out/",
    tier="V1",
)
print(result.summary())
```

Every job becomes one prepared request, sent through ``AsyncStepFun``'s own sender under two
limits at once (requests in flight and requests per minute), which adapt when StepFun answers 429.
Each image is written atomically into ``out`` with its provenance in a PNG text chunk, and each
finished job appends one line to ``out/manifest.jsonl`` (synced after the image is in place).
Running the same batch again skips the finished jobs, so a crash or Ctrl-C costs at most the
requests that were in flight.

The package, one concept a module: ``_jobs`` (jobs, ids, how they are described),
``_runner`` (the job loop, ``run``/``arun``), ``_budget`` (costs, ``max_spend``,
``estimate``), ``_writer`` (group commits, on a thread or in a writer process), ``_manifest`` (the
JSONL record, resume), ``_ratelimit`` (pacing and 429 adaptation), ``_progress`` (the bar) and
``_result`` (``BatchResult``); past one process: ``_distributed`` (``run_distributed``: workers
on Ray or local processes under one account-wide limit) and ``_store`` (any fsspec output).
"""

from __future__ import annotations

from ._budget import BudgetError, Estimate, estimate
from ._distributed import run_distributed
from ._jobs import DEFAULT_MODELS, Job, JobEndpoint, load_jobs
from ._manifest import ManifestLockedError
from ._ratelimit import Limits, resolve_limits
from ._result import BatchInterrupted, BatchResult
from ._runner import arun, run

__all__ = [
    "DEFAULT_MODELS",
    "BatchInterrupted",
    "BatchResult",
    "BudgetError",
    "Estimate",
    "Job",
    "JobEndpoint",
    "Limits",
    "ManifestLockedError",
    "arun",
    "estimate",
    "load_jobs",
    "resolve_limits",
    "run",
    "run_distributed",
]
