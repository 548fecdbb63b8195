"""The request inspector (issue 20): what went to each container and what came back, in a bounded ring per container.

Every fetchProxy request (the relay loop's own and the blocking relay's), every webSocketProxy session and every
queue-function call is one entry: time, method, path, status, duration, sizes, cold start, headers both ways and the
first PREVIEW bytes of each body. The ring keeps the last `inspector_size` entries per container (0: nothing is
recorded, and the proxy does no inspector work at all).

Two rules shape the code:
- A secret never enters the ring. Redaction happens at record time (domain/redaction.py): credential headers and
  query values are replaced, and the caller's session token and every dev key are cut out of paths, header values,
  body previews and WebSocket frames, before an entry exists. A compressed body is decoded (its first PREVIEW bytes
  only) before it is scrubbed, so a token cannot hide in gzip.
- Recording costs the relay loop little and never copies a whole body: a Recording takes slices of the bytes as they
  pass (at most PREVIEW per direction) and counts the rest; header redaction is worked out once per distinct header
  block (the relay loop repeats them) and the preview is scrubbed once, when the exchange ends.

The wire form (`Entry.to_wire`) is built when someone reads the ring: text or hex, newest first.

The package, from the bottom up: preview.py (what of a body is kept and how it is shown), entry.py (a ring entry
and its wire form), websocket.py (a session's frames), rings.py (RequestInspector, the rings, and Recording, one
fetchProxy exchange on its way into them).
"""
from grokemu.domain.redaction import REDACTED
from grokemu.services.inspector.entry import Entry
from grokemu.services.inspector.preview import PREVIEW
from grokemu.services.inspector.rings import Recording, RequestInspector
from grokemu.services.inspector.websocket import FRAME_PREVIEW, MAX_FRAMES, WebSocketTap

__all__ = ["FRAME_PREVIEW", "MAX_FRAMES", "PREVIEW", "REDACTED", "Entry", "Recording", "RequestInspector",
           "WebSocketTap"]
