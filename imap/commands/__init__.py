"""IMAP command handlers, one module per family.

Each handler is `async def handler(session, command) -> list[Response]` and ends its list
with the tagged completion. Handlers call the core through `session.core` and ask the
session for state transitions; they never touch sockets.
"""
