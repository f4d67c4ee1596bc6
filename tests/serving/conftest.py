from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from hermesd.server.app import create_app
from hermesd.server.settings import Settings
from tests.serving.fake_engine import FakeEngine


@pytest.fixture
def make_client(tmp_path: Any) -> Callable[..., Any]:
    """Build an in-process app around a FakeEngine; yields (client, engine)."""

    def factory(engine: FakeEngine | None = None, **settings: Any) -> Any:
        engine = engine or FakeEngine()
        cfg = Settings(state_dir=tmp_path, **settings)
        app = create_app(cfg, lambda: engine)

        class Ctx:
            async def __aenter__(self) -> tuple[httpx.AsyncClient, FakeEngine]:
                self.manager = LifespanManager(app)
                await self.manager.__aenter__()
                transport = httpx.ASGITransport(app=self.manager.app)
                self.client = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")
                for _ in range(200):
                    if (await self.client.get("/health")).status_code == 200:
                        break
                    await asyncio.sleep(0.01)
                return self.client, engine

            async def __aexit__(self, *exc: Any) -> None:
                await self.client.aclose()
                await self.manager.__aexit__(*exc)

        return Ctx()

    return factory


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> AsyncIterator[tuple[httpx.AsyncClient, FakeEngine]]:
    async with make_client() as pair:
        yield pair
