"""Fixtures of the web tests: the portal tests drive the app over the real core of the
session's demo deployment (its migrations already ran when the deployment was made)."""

from __future__ import annotations

import pytest

from mss.core import Core


@pytest.fixture
async def core(deployment):
    core = await Core.open(deployment.settings(), migrate=False)
    yield core
    await core.close()
