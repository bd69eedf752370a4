"""The hypothesis profile every fuzz test uses."""

from __future__ import annotations

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
