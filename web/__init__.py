"""The web front end: the ASGI application of the `http` listener, served by uvicorn inside
`mss serve` (`web.server`). Like every front end it sees the core only through
`mss.services` (`WebServices`) and the plain types beside it.
"""
