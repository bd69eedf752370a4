"""The hypothesis profile every fuzz test uses, and what they check of every audio source they open."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings

from tests.conftest import under_ci

# derandomize under CI: the same examples every run, so a red CI means a change broke something (run locally
# without CI=true to explore new random inputs).
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=under_ci(),
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def drain(source: Any, timeout_s: float = 60.0) -> int:
    """Read `source` to its end and return its sample count; every chunk must be finite float32 mono."""

    async def read() -> int:
        n = 0
        async for chunk in source:
            assert chunk.samples.dtype == np.float32 and chunk.samples.ndim == 1
            assert np.all(np.isfinite(chunk.samples))
            n += len(chunk.samples)
        return n

    return asyncio.run(asyncio.wait_for(read(), timeout_s))
