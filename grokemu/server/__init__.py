"""waitress serves everything on one port; WebSockets, big uploads and proxied requests leave the shared worker
threads (docs/design.md decision 2), and no number of idle, slow or non-reading connections can stall the API.

Stock waitress cannot serve flask-sock: simple-websocket needs the raw socket, and waitress's event loop owns every
connection. For a request with `Upgrade: websocket` the connection takeover takes it away from waitress (a
dup of the socket, the original removed from the event loop and closed), puts it in blocking mode, exposes it as
`environ['werkzeug.socket']` and runs the Flask app for that request on a thread of its own. The waitress worker
returns at once, so open WebSockets never hold the worker threads that plain HTTP needs.

Resource limits (settings in config.py):
- waitress polls with poll(), not select(): no 1024-descriptor ceiling. At `connection_limit` open connections the
  connection idle the longest is closed to make room, so idle sockets can never keep a new caller out; an idle
  keep-alive connection is closed after `channel_timeout`, a request head not complete `header_timeout` seconds
  after its first byte is cut (slowloris).
- fetchProxy requests (the `streamed_prefixes` given to the takeover) run on threads of their own, at most
  `max_streams` at once together with the streamed uploads; beyond that a proxied request gets 503 at once. The
  shared workers (`threads`) serve the rest of the API and never wait on a container or on a caller that does not
  read.
- A connection whose first request is a fetchProxy request (nothing else pending on it) leaves waitress at once; that
  request is served on a stream thread (relay.py), then the connection lives in the relay loop (relay_loop.py,
  docs/design.md decision 2): one selector thread for every such connection, httptools for the request heads, the guard and
  ProxyService.fast_forward (web/fast_proxy.py) for each body-less request to a started container, which the loop
  sends over kept-alive upstream sockets and answers as the container's bytes arrive. Anything else on such a
  connection is handed to a stream thread for that one request (relay.py: waitress's parser, the whole WSGI app) and
  the connection comes back. In the loop it holds one of `max_streams` parking places; idle after
  `channel_timeout`, it is closed.
- Every connection taken from waitress has a watchdog (TrackedSocket): a WebSocket that carries nothing either way
  for `websocket_idle_timeout`, an upload or answer that makes no progress for `stream_timeout`, is cut. An answer
  still written through waitress (a chunked one, or one with pipelined requests behind it) is cut the same way.
- `preflight(environ)` (web/guard.py) sees every request that has a body as soon as its head is in, before waitress
  reads or spools any of it; its refusal is written with `Connection: close` and the body is never stored.
- `environ["grokemu.listener"]` says which listening socket the connection came in on: "bridge" for the Docker
  bridge gateway, "main" otherwise.

Modules: takeover.py (ConnectionTakeover: WebSockets, relayed uploads, direct answers), relay_loop.py (keep-alive
fetchProxy connections served off waitress, one thread; its parts: relay_state.py, the records and their states and
transition tables; relay_answer.py, answer heads and framing; relay_caller.py and relay_container.py, its two sides),
relay.py (one request handed off by the loop), streams.py
(stream threads, serving one request on a taken-over socket), watchdog.py (TrackedSocket), channel.py (waitress's
channel with the preflight, refusals and limits), listener.py (GrokemuServer: timeouts, eviction), serve.py (bind,
build_server, run_forever, serve_on_thread, stop_server).

The server imports neither the web layer nor an adapter (an import-linter contract): what it calls of the web layer
(the error renderer, the WebSocket rejecter, the fetchProxy fast path) comes in a WebHooks value from the
composition root, grokemu/bootstrap.py, which also decides the listeners (plan_listeners) and builds what
`grokemu up` and the test kit's in-process grokemu serve (prepare).
"""
from __future__ import annotations

from grokemu.server.serve import bind, build_server, run_forever
from grokemu.server.takeover import ConnectionTakeover, WebHooks

__all__ = ["ConnectionTakeover", "WebHooks", "bind", "build_server", "run_forever"]
