"""WsEcho: the WebSocket app of Datagrok's CVMTests test2, standard library only (it must build without PyPI).

    GET /health   {"result": "Healthy"}
    GET /ws       a WebSocket (RFC 6455, written out by hand below) that echoes every text and binary message.
                  The text message `close <code> [reason]` makes the server close with that code instead, so a
                  client can check that close codes survive a proxy. A client's close is answered with its code.
"""
import base64
import hashlib
import json
import os
import signal
import struct
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "8765"))
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
MAX_MESSAGE = 64 * 1024 * 1024
TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


class Closed(Exception):
    def __init__(self, code, reason=""):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


def unmask(data, mask):
    if not data:
        return data
    # XOR the whole payload as one big integer: fast enough for megabytes without a C extension.
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def frame(opcode, payload=b""):
    """One unmasked FIN frame (a server never masks: RFC 6455 section 5.1)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def close_payload(code, reason=""):
    return struct.pack("!H", code) + reason.encode("utf-8")[:123]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # header and body writes must not wait for a delayed ACK (40 ms each)

    def _json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/health":
            return self._json(200, {"result": "Healthy"})
        if path == "/ws":
            return self._websocket()
        return self._json(404, {"error": f"no route {path}"})

    # -- WebSocket --------------------------------------------------------------------------------------------------
    def _websocket(self):
        key = self.headers.get("Sec-WebSocket-Key")
        upgrade = (self.headers.get("Upgrade") or "").lower() == "websocket"
        if not upgrade or not key or self.headers.get("Sec-WebSocket-Version") != "13":
            return self._json(400, {"error": "expected a WebSocket upgrade (RFC 6455, version 13)"})
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        self.close_connection = True
        try:
            self._echo()
        except Closed as c:
            self._send(frame(CLOSE, close_payload(c.code, c.reason) if c.code else b""))
        except (ConnectionError, OSError):
            pass

    def _send(self, data):
        try:
            self.wfile.write(data)
        except OSError:
            pass

    def _read_frame(self):
        head = self.rfile.read(2)
        if len(head) < 2:
            raise ConnectionError("peer went away")
        fin, opcode = head[0] & 0x80, head[0] & 0x0F
        masked, n = head[1] & 0x80, head[1] & 0x7F
        if head[0] & 0x70:
            raise Closed(1002, "reserved bits set (no extension was negotiated)")
        if n == 126:
            n = struct.unpack("!H", self.rfile.read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.rfile.read(8))[0]
        if not masked:
            raise Closed(1002, "client frames must be masked")
        if n > MAX_MESSAGE:
            raise Closed(1009, "message too big")
        mask = self.rfile.read(4)
        payload = self.rfile.read(n)
        if len(payload) < n:
            raise ConnectionError("peer went away mid-frame")
        return bool(fin), opcode, unmask(payload, mask)

    def _echo(self):
        parts, kind = [], None
        while True:
            fin, opcode, payload = self._read_frame()
            if opcode == PING:
                self._send(frame(PONG, payload))
                continue
            if opcode == PONG:
                continue
            if opcode == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 0
                reason = payload[2:].decode("utf-8", "replace")
                raise Closed(code, reason)  # answer with the same code, then the connection ends
            if opcode in (TEXT, BINARY):
                if kind is not None:
                    raise Closed(1002, "new message inside a fragmented one")
                kind, parts = opcode, [payload]
            elif opcode == CONTINUATION:
                if kind is None:
                    raise Closed(1002, "continuation without a message")
                parts.append(payload)
            else:
                raise Closed(1002, f"unknown opcode {opcode}")
            if not fin:
                continue
            message, opcode, kind = b"".join(parts), kind, None
            if opcode == TEXT:
                try:
                    text = message.decode("utf-8")
                except UnicodeDecodeError:
                    raise Closed(1007, "text message is not UTF-8") from None
                if text.startswith("close "):
                    words = text.split(" ", 2)
                    raise Closed(int(words[1]), words[2] if len(words) > 2 else "")
            self._send(frame(opcode, message))

    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops SYNs under a burst of connects


if __name__ == "__main__":
    # As PID 1 in its container the app would ignore SIGTERM, and every `docker stop` would wait 10 s for SIGKILL.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"ws-echo listening on {PORT}", flush=True)
    Server(("0.0.0.0", PORT), Handler).serve_forever()
