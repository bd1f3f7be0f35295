"""Alembic environment: runs migrations over the async engine of `sqlalchemy.url`."""

from __future__ import annotations

import asyncio

from alembic import context

from annuaire.model import Base as DirectoryBase
from mss.db.engine import create_engine
from mss.db.models import Base as StoreBase

target_metadata = [StoreBase.metadata, DirectoryBase.metadata]


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_main())
