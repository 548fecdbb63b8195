"""The labels grokemu puts on everything it creates in Docker (docs/design.md decision 4).

`grokemu.managed` and `grokemu.instance` let a restart re-adopt running containers and let reset remove exactly
what this instance created; the spawner, the image builds and reset all use this one set.
"""
from __future__ import annotations


def managed_labels(instance: str) -> dict[str, str]:
    """The label set every container and image of grokemu instance `instance` carries (and is selected by)."""
    return {"grokemu.managed": "true", "grokemu.instance": instance}


def queue_network(instance: str) -> str:
    """The bridge network the message broker and the queue workers of `instance` share (and nothing else joins):
    other containers on the machine cannot reach the broker (docs/queue-functions.md)."""
    return "grokemu-queue" if instance == "default" else f"grokemu-{instance}-queue"
