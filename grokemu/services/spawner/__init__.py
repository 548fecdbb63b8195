"""grok_spawner's part: run plugin containers on the orchestrator as Datagrok does, driven by container.json.

The lifecycle is the transition table in domain/lifecycle.py; this module decides *when* to fire its events.
One container is moved by one driver at a time (a per-container lock: single flight), either on a thread of its
own (a run request, a proxied request, or the scheduler finding work) or inline when tests drive it. A driver
re-reads the entity before every step, so a stop, a replacement or a timeout that lands meanwhile wins.

Time: the stuck-state timeout and idle shutdown read the injected clock (tests move it); waiting for Docker and
for the app inside to answer is real time and uses short real sleeps.

The parts, each a class that adds one concern to the ones below it and calls only those (so each module imports only
lower ones): core.py (the state they share, the transition that fires an event, waiting, failing a container),
drivers.py (a start and a stop, step by step), reconcile.py (what the daemon runs against what the store says, and
leaving with the stand), watch.py (the scheduler's pass: the daemon's health, exits, stuck states, idle shutdown),
live_replace.py (`grokemu dev`'s swap) and service.py (Spawner: the requests from the API, the proxy and the other
services).
"""
from grokemu.services.spawner.core import LOG_LINES_KEPT, NOT_LISTENING, STARTING_UP, STOPPED, STOPPING_DOWN
from grokemu.services.spawner.service import Spawner

__all__ = ["LOG_LINES_KEPT", "NOT_LISTENING", "STARTING_UP", "STOPPED", "STOPPING_DOWN", "Spawner"]
