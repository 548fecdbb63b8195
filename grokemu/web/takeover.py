"""What a view may ask of the server's connection takeover (server/takeover.py ConnectionTakeover), as a typed
protocol: the web layer does not import the server.

The server puts its takeover in the environ of every request waitress serves (not of a request already on a
taken-over connection); `direct_answers(environ)` reads it.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

ENVIRON_KEY = "grokemu.takeover"


class DirectAnswers(Protocol):
    def can_answer_directly(self, environ: dict) -> bool:
        """True when this request's answer may be written on its socket by the calling thread (then the
        connection closes after it)."""
        ...

    def answer_directly(self, environ: dict, status: str, headers: list[tuple[str, str]],
                        body: Iterable[bytes]) -> None:
        """Write the whole answer on the caller's socket and close the connection; the app then gives waitress
        an empty answer."""
        ...


    def answer_on_stream(self, environ: dict, status: str, headers: list[tuple[str, str]],
                         body: Iterable[bytes]) -> bool:
        """Write a long-lived answer (a followed log) on the caller's socket from a stream thread, each chunk as it
        comes, then close the connection; an empty chunk is a moment to check the caller is still there (it stops
        when the caller has gone). False when every stream slot is taken (`max_streams`); then nothing happened.
        Only when `can_answer_directly`."""
        ...


def direct_answers(environ: dict) -> DirectAnswers | None:
    return environ.get(ENVIRON_KEY)
