"""An HTTP app that acts as the calling user, as apps built on datagrok-api's Node runtime do: it reads the caller's
token from `x-user-api-key` (or `Authorization`, or the `auth` cookie) and calls back into the API with it.

  GET  /whoami   {"login": <login the API gives for the caller's token>, "tokenFrom": <header>, "status": <code>}
  GET  /env/<N>  an environment variable (DATA_CONNECTION is `#{x.todo}` rendered: the package's own database)
  POST /echo     {"method", "contentType", "contentEncoding", "length", "sha256"} of the request body
"""
import hashlib
import json
import os
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def caller_token(headers):
    if headers.get("x-user-api-key"):
        return headers["x-user-api-key"], "x-user-api-key"
    if headers.get("authorization"):
        return headers["authorization"], "authorization"
    for part in (headers.get("cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == "auth":
            return value, "cookie"
    return None, None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/whoami":
            token, source = caller_token(self.headers)
            if token is None:
                return self.answer(401, {"error": "no caller identity"})
            request = urllib.request.Request(os.environ["DATAGROK_API_URL"] + "/users/current",
                                             headers={"Authorization": token})
            try:
                with urllib.request.urlopen(request, timeout=10) as r:
                    return self.answer(200, {"login": json.load(r)["login"], "tokenFrom": source, "status": 200})
            except urllib.error.HTTPError as e:
                return self.answer(200, {"login": None, "tokenFrom": source, "status": e.code})
        if self.path.startswith("/env/"):
            return self.answer(200, {"value": os.environ.get(self.path[5:])})
        return self.answer(404, {"error": "not found"})

    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.answer(200, {"method": "POST", "contentType": self.headers.get("Content-Type"),
                          "contentEncoding": self.headers.get("Content-Encoding"), "length": len(data),
                          "sha256": hashlib.sha256(data).hexdigest()})


ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
