"""fetchProxy without Flask (docs/design.md decision 2). The server's relay loop (server/relay_loop.py) asks
`FastProxy.plan` for each request head on a connection it took from waitress: a FastForward it sends to the container
itself, or None, and the request goes to the blocking relay (server/relay.py), which calls `FastProxy.handle`.

The rules are the ones the Flask route runs: the same guard call (`Guard.check`, with the endpoint the URL map would
find), the same ProxyService (fast_forward for a started container, forward otherwise), the same error answers
(web/errors.py render). A request this module does not recognise as a plain fetchProxy request (another path,
an unusual method, an Upgrade, a path Flask would redirect) returns None and goes through the WSGI app instead.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable

from grokemu.domain.errors import GrokemuError
from grokemu.domain.upstream import FastForward, proxied_request
from grokemu.web import errors
from grokemu.web.proxy import HTTP_PREFIX, METHODS, split_target

log = logging.getLogger(__name__)

ENDPOINT = "proxy.fetch_proxy"
_METHODS = frozenset(METHODS)
_PREFIX_LENGTH = len(HTTP_PREFIX)


class FastProxy:
    PREFIX = HTTP_PREFIX
    def __init__(self, context):
        self._guard = context.guard
        self._context = context

    @staticmethod
    def recognises(environ: dict) -> bool:
        path = environ.get("PATH_INFO") or ""
        return (path.startswith(HTTP_PREFIX) and len(path) > _PREFIX_LENGTH and path[_PREFIX_LENGTH] != "/"
                and environ.get("REQUEST_METHOD") in _METHODS and "HTTP_UPGRADE" not in environ)

    def plan(self, environ: dict) -> FastForward | None:
        """The container and request head for a body-less fetchProxy request from a caller the guard lets through
        to a container known started; None for anything else (a refusal, a cold start, an error), which the blocking
        relay then serves and answers in full. The guard runs here as on every other way in."""
        if not self.recognises(environ):
            return None
        try:
            caller, cid, target = self._checked(environ)
            return self._context.proxy.fast_forward(cid, environ["REQUEST_METHOD"], target, environ,
                                                    token=caller.token, relayed=proxied_request(environ))
        except GrokemuError:
            return None  # the blocking relay runs the same checks and writes the refusal

    def _checked(self, environ: dict):
        """The guard's call for the fetchProxy route (the caller), then the container id and its request target."""
        caller = self._guard.check(environ, matched=(ENDPOINT, {"rest": environ["PATH_INFO"][_PREFIX_LENGTH:]}))
        cid, target = split_target(environ, HTTP_PREFIX)
        return caller, cid, target

    def handle(self, environ: dict) -> tuple[str, list[tuple[str, str]], Iterable[bytes]] | None:
        """The answer (status line, headers, body whose close() releases the container) or None: not a fetchProxy
        request this path serves; the caller runs the WSGI app."""
        if not self.recognises(environ):
            return None
        path = environ["PATH_INFO"]
        try:
            caller, cid, target = self._checked(environ)
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"] if length > 0 else None
            answer = self._context.proxy.forward(cid, caller.login, environ["REQUEST_METHOD"], target, environ,
                                                 body, length, token=caller.token)
            return answer.status_line, answer.headers, answer.body
        except GrokemuError as e:
            status, headers, data = errors.render(e, path)
        except Exception as e:  # as web/errors.py's handler for the Flask route
            log.exception("unhandled error on %s %s", environ.get("REQUEST_METHOD"), path)
            status, headers, data = errors.render_unexpected(e, path)
        return status, headers, [data]
