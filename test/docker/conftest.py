"""Docker fixtures: the images, built once per run, and the reason to skip where no engine runs.

.ci/run starts an engine (../shared/tools/docker-sandbox.sh) and sets OCR_REQUIRE_DOCKER=1,
which turns a missing engine into failures; elsewhere these tests are skipped with the reason.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from compose_stack import ComposeStack, build_images, docker_unavailable

# The first test also builds the images.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1500)]


def require_docker() -> None:
    """Skip, with the reason, where no engine runs; fail instead with OCR_REQUIRE_DOCKER=1."""
    reason = docker_unavailable()
    if reason is not None:
        if os.environ.get("OCR_REQUIRE_DOCKER") == "1":
            pytest.fail(f"a Docker engine is required (OCR_REQUIRE_DOCKER=1) but {reason}")
        pytest.skip(f"Docker tests skipped: {reason}")


@pytest.fixture(scope="session")
def images() -> float:
    """Both images built from the working tree; the seconds the build took."""
    require_docker()
    seconds = build_images()
    print(f"\ndocker compose build: {seconds:.1f} s")
    return seconds


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, ComposeStack):
                report.sections.append(("compose logs", value.logs()[-20000:]))
    return report
