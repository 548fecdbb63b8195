"""Squares: the HTTP app of Datagrok's CVMTests test1, plus a few routes that exercise a proxy.

Standard library only (it must build without PyPI). Routes:
  GET  /square?number=n   {"result": n*n}; a negative number raises (500), as test1 does
  GET  /health            {"result": "Healthy"}
  POST /echo              the request body back, with its Content-Type
  GET  /status/<code>     an empty answer with that status (201, 204, 404, ...)
  GET  /gzip              a gzip-encoded JSON body (Content-Encoding: gzip)
  GET  /bytes/<n>         n bytes, streamed in 64 KiB chunks
  POST /count             reads the whole body and answers its size and sha256
  GET  /env/<NAME>        an environment variable (DATAGROK_API_URL, USER_API_KEY, ...)
  GET  /datagrok          calls back into the server: GET $DATAGROK_API_URL/users/current with USER_API_KEY
  GET  /exit?code=N       the process exits with code N (to see how the platform reports a crash)
"""
import gzip
import hashlib
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PORT = int(os.environ.get("PORT", "5353"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status, body=b"", content_type="application/json", headers=None):
        self.send_response(status)
        if body or status not in (204, 304):
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _json(self, status, obj):
        self._send(status, json.dumps(obj).encode())

    def _body(self):
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length))
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return b""

    def do_GET(self):
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        if url.path == "/health":
            return self._json(200, {"result": "Healthy"})
        if url.path == "/square":
            number = float(parse_qs(url.query).get("number", ["0"])[0])
            if number < 0:
                return self._json(500, {"error": f"cannot square a negative number {number}"})
            return self._json(200, {"result": number * number})
        if parts[0] == "status" and len(parts) == 2:
            return self._send(int(parts[1]))
        if url.path == "/gzip":
            body = gzip.compress(json.dumps({"compressed": True}).encode())
            return self._send(200, body, headers={"Content-Encoding": "gzip"})
        if parts[0] == "bytes" and len(parts) == 2:
            size = int(parts[1])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"x" * 65536
            while size > 0:
                self.wfile.write(chunk[:size])
                size -= len(chunk)
            return None
        if url.path == "/datagrok":
            api, token = os.environ.get("DATAGROK_API_URL"), os.environ.get("USER_API_KEY")
            req = urllib.request.Request(f"{api}/users/current", headers={"Authorization": token or ""})
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    return self._json(200, {"status": resp.status, "user": json.load(resp)})
            except urllib.error.HTTPError as e:
                return self._json(200, {"status": e.code, "error": e.read().decode()})
            except OSError as e:
                return self._json(502, {"error": f"cannot reach {api}: {e}"})
        if url.path == "/exit":
            code = int(parse_qs(url.query).get("code", ["1"])[0])
            print(f"exiting with code {code} as asked", flush=True)
            self._json(200, {"exiting": code})
            os._exit(code)
        if parts[0] == "env" and len(parts) == 2:
            return self._json(200, {"name": parts[1], "value": os.environ.get(parts[1])})
        return self._json(404, {"error": f"no route {url.path}"})

    def do_POST(self):
        url = urlparse(self.path)
        body = self._body()
        if url.path == "/echo":
            return self._send(200, body, self.headers.get("Content-Type", "application/octet-stream"))
        if url.path == "/count":
            return self._json(200, {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()})
        if url.path == "/created":
            return self._send(201, body, "application/octet-stream")
        return self._json(404, {"error": f"no route {url.path}"})

    do_PUT = do_POST

    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))


if __name__ == "__main__":
    # As PID 1 the process gets no default SIGTERM handling: without this, every `docker stop` waits 10 s.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    print(f"squares listening on {PORT}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
