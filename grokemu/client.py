"""A small HTTP client of a running grokemu, standard library only: what `grokemu publish DIR`, `grokemu up --demo`
and the test kit (grokemu/testing/) share. It speaks the same wire as the real clients: the package upload is the
raw ZIP `grok publish` sends (docs/grok-publish.md R7), entities come from /api/docker/* (docs/datagrok-api.md §2).
"""
from __future__ import annotations

import fnmatch
import io
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from grokemu.domain.names import resolve_container

# never part of an upload (the CLI's webpack output and node_modules do not matter to containers)
ALWAYS_SKIPPED = ("node_modules", ".git", "__pycache__", ".pytest_cache", ".venv", "*.pyc", ".DS_Store")
SETTLED = ("ready", "error")


class ClientError(RuntimeError):
    """A call to grokemu failed; `status` is the HTTP status (0 when grokemu could not be reached)."""

    def __init__(self, message: str, status: int = 0, body: str = ""):
        super().__init__(message)
        self.status = status
        self.body = body


class PublishFailed(ClientError):
    """An image of the published package ended in `error`; `logs` is its build log."""

    def __init__(self, message: str, logs: str):
        super().__init__(message)
        self.logs = logs


def api_message(data: bytes) -> str:
    """The `message` of a Datagrok ApiError body (grokemu's errors: web/errors.py), else the body's start."""
    text = data.decode("utf-8", "replace")
    try:
        value = json.loads(text)
    except ValueError:
        return text[:500].strip()
    return str(value.get("message") or text[:500]) if isinstance(value, dict) else text[:500]


def ignored(rel: str, patterns: Iterable[str]) -> bool:
    """Is the package path `rel` (POSIX, relative) left out by one of `patterns` (.npmignore lines)?"""
    parts = rel.split("/")
    for pattern in patterns:
        pattern = pattern.strip().rstrip("/")
        if not pattern or pattern.startswith("#"):
            continue
        anchored = pattern.lstrip("/")
        if fnmatch.fnmatch(rel, anchored) or any(fnmatch.fnmatch(p, anchored) for p in parts):
            return True
    return False


def package_files(folder: str | os.PathLike) -> dict[str, bytes]:
    """The files of a package folder as an upload carries them: everything but ALWAYS_SKIPPED and the patterns of
    its `.npmignore` (which the grok CLI requires; an empty one ignores nothing)."""
    root = Path(folder)
    if not (root / "package.json").is_file():
        raise ClientError(f"{root} is not a package folder (no package.json)")
    ignore = list(ALWAYS_SKIPPED)
    npmignore = root / ".npmignore"
    if npmignore.is_file():
        ignore += npmignore.read_text().splitlines()
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not ignored(rel, ignore):
            files[rel] = path.read_bytes()
    return files


def package_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


class Client:
    """One grokemu at `url` (e.g. http://localhost:8080), signed in with a dev key on first use."""

    def __init__(self, url: str, key: str = "admin", timeout: float = 60):
        self.url = url.rstrip("/")
        if self.url.endswith("/api"):
            self.url = self.url[: -len("/api")]
        self.key = key
        self.timeout = timeout
        self._token: str | None = None

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    # -- plumbing ---------------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, body: bytes | None = None, headers: dict | None = None,
                timeout: float | None = None, auth: bool = True) -> tuple[int, dict, bytes]:
        """(status, headers, body) of one call; a path starting with `/` is under the server root, else under /api."""
        url = self.url + path if path.startswith("/") else f"{self.api}/{path}"
        all_headers = dict(headers or {})
        if auth and "Authorization" not in all_headers:
            all_headers["Authorization"] = self.token
        req = urllib.request.Request(url, data=body, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers.items()), e.read()
        except OSError as e:
            raise ClientError(f"grokemu at {self.url} could not be reached: {e}") from None

    def json(self, method: str, path: str, **kwargs):
        status, _, data = self.request(method, path, **kwargs)
        if status >= 400:
            raise ClientError(f"{method} {path}: {status} {data[:500].decode('utf-8', 'replace')}", status,
                               data.decode("utf-8", "replace"))
        return json.loads(data) if data else None

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = self.json("POST", "users/login/dev", headers={"Authorization": f"Dev {self.key}"},
                                    auth=False)["token"]
        return self._token

    def healthy(self) -> bool:
        try:
            status, _, _ = self.request("GET", "/_grokemu/health", auth=False, timeout=3)
            return status == 200
        except ClientError:
            return False

    def health(self) -> dict:
        """`/_grokemu/health` as a signed-in caller sees it (version, uptime, Docker reachable, ...)."""
        return self.json("GET", "/_grokemu/health")

    def stream(self, path: str, *, timeout: float | None = None):
        """The open answer to `GET path` (read it as it comes; close it, or use `with`): ClientError with the
        ApiError's message when the status is 400 or more. `timeout` None: a read may wait forever."""
        url = self.url + path if path.startswith("/") else f"{self.api}/{path}"
        req = urllib.request.Request(url, headers={"Authorization": self.token})
        try:
            return urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            data = e.read()
            raise ClientError(api_message(data), e.code, data.decode("utf-8", "replace")) from None
        except OSError as e:
            raise ClientError(f"grokemu at {self.url} could not be reached: {e}") from None

    def container_logs(self, name: str, tail: int | None = None, follow: bool = False) -> Iterable[bytes]:
        """A container's logs, by any name `grokemu.container` takes (domain/names.py), as they come: the last
        `tail` lines (None: all), then, with `follow`, new output until the container stops."""
        query = urllib.parse.urlencode({"container": name, "tail": "all" if tail is None else tail,
                                        "follow": "true" if follow else "false"})
        resp = self.stream(f"/_grokemu/logs?{query}", timeout=None if follow else self.timeout)
        with resp:
            while True:
                chunk = resp.read1(64 * 1024)
                if not chunk:
                    return
                yield chunk

    def proxy_url(self, cid: str, path: str = "/") -> str:
        """fetchProxy's URL of a container (an on_demand one starts on the first request to it)."""
        return f"{self.api}/docker/containers/proxy/{cid}/{path.lstrip('/')}"

    # -- entities ---------------------------------------------------------------------------------------------------
    def images(self, package: str | None = None) -> list[dict]:
        found = self.json("GET", "docker/images")
        return [i for i in found if package is None or (i.get("package") or {}).get("name") == package]

    def containers(self, package: str | None = None) -> list[dict]:
        found = self.json("GET", "docker/containers")
        return [c for c in found if package is None or (c.get("package") or {}).get("name") == package]

    def container(self, cid: str) -> dict:
        return self.json("GET", f"docker/containers/{urllib.parse.quote(cid)}")

    def find_container(self, name: str) -> dict:
        """The one container `name` means, by any name `grokemu.container` takes (domain/names.py): raises
        UnknownContainer or AmbiguousContainer (both LookupErrors) with the candidates in the message."""
        return dict(resolve_container(name, self.containers(), self.images()))

    def snapshot(self) -> dict:
        """Every container and image without their logs, with when each entered its status
        (`grokemu.statusSince`) and the server's clock (`now`): the dashboard's snapshot (services/dashboard.py)."""
        return self.json("GET", "/_grokemu/dashboard/snapshot")

    # -- publishing -------------------------------------------------------------------------------------------------
    def upload(self, name: str, files: dict[str, bytes], *, release: bool = False) -> dict:
        """The upload `grok publish` makes (debug unless `release`), with the dev key."""
        quoted = urllib.parse.quote(name, safe="@")
        return self.json("POST", f"packages/dev/{quoted}?debug={'false' if release else 'true'}",
                         body=package_zip(files), headers={"Authorization": f"Dev {self.key}",
                                                           "Content-Type": "application/octet-stream"},
                         auth=False, timeout=max(self.timeout, 300))

    def wait_images(self, package: str, timeout: float = 600, progress: Callable[[str], None] | None = None,
                    ids: Iterable[str] | None = None) -> list[dict]:
        """Until every image of `package` (or those of `ids`) is `ready` or `error` (PublishFailed with the build log
        on error)."""
        wanted = set(ids or ())
        deadline = time.monotonic() + timeout
        seen_status: dict[str, str] = {}
        seen_logs: dict[str, int] = {}
        while True:
            images = [i for i in self.images(package) if not wanted or i["id"] in wanted]
            for image in images:
                iid, status = image["id"], image["status"]
                logs = image.get("logs") or ""
                if progress and len(logs) > seen_logs.get(iid, 0):
                    for line in logs[seen_logs.get(iid, 0):].splitlines():
                        if line.strip():
                            progress(f"  [{image['name']}] {line}")
                    seen_logs[iid] = len(logs)
                if progress and seen_status.get(iid) != status:
                    progress(f"image {image['name']}: {status}")
                    seen_status[iid] = status
            if images and all(i["status"] in SETTLED for i in images):
                failed = [i for i in images if i["status"] == "error"]
                if failed:
                    raise PublishFailed("image " + ", ".join(i["name"] for i in failed) + " failed",
                                        "\n".join(f"--- {i['name']}\n{i.get('logs') or ''}" for i in failed))
                return images
            if time.monotonic() > deadline:
                raise ClientError(f"images of {package} not ready after {timeout:g} s: "
                                   + ", ".join(f"{i['name']}={i['status']}" for i in images))
            time.sleep(0.2)

    def publish(self, folder: str | os.PathLike, *, release: bool = False, timeout: float = 600,
                progress: Callable[[str], None] | None = None) -> tuple[str, list[dict]]:
        """Upload a package folder and wait until its images are ready: (package name, images)."""
        files = package_files(folder)
        name = json.loads(files["package.json"])["name"]
        size = sum(len(v) for v in files.values())
        if progress:
            progress(f"upload {name} ({len(files)} files, {size / 1024:.1f} KiB, "
                     f"{'release' if release else 'debug'}) to {self.api}")
        started = time.monotonic()
        result = self.upload(name, files, release=release)
        if progress:
            progress(f"uploaded in {time.monotonic() - started:.1f} s: {json.dumps(result)[:300]}")
        package = (result or {}).get("name") or name
        ids = [i["id"] for i in (result or {}).get("dockerImages") or []]
        if not ids:
            if progress:
                progress(f"{package} has no dockerfiles/: no image to wait for")
            return package, []
        images = self.wait_images(package, timeout, progress, ids=ids)
        return package, images

    def run(self, cid: str, await_start: bool = True) -> dict:
        return self.json("GET", f"docker/containers/{urllib.parse.quote(cid)}/run?awaitStart="
                                f"{'true' if await_start else 'false'}", timeout=max(self.timeout, 300))

    def replace(self, cid: str, image: str) -> dict:
        """Replace a started container live with `image`, a new build of its own image (`datagrok/<image>:<tag>`):
        the same entity, the new container running once this returns (`grokemu dev`; web/admin.py)."""
        return self.json("POST", f"/_grokemu/containers/{urllib.parse.quote(cid)}/replace",
                         body=json.dumps({"image": image}).encode(), headers={"Content-Type": "application/json"},
                         timeout=max(self.timeout, 330))

    def stop(self, cid: str, await_stop: bool = True) -> dict:
        return self.json("GET", f"docker/containers/{urllib.parse.quote(cid)}/stop?awaitStop="
                                f"{'true' if await_stop else 'false'}", timeout=max(self.timeout, 120))

    def logs(self, cid: str, limit: int = 10000) -> str:
        status, _, data = self.request("GET", f"docker/containers/{urllib.parse.quote(cid)}/logs?limit={limit}")
        if status >= 400:
            raise ClientError(f"logs of {cid}: {status}", status, data.decode("utf-8", "replace"))
        text = data.decode("utf-8", "replace")
        try:
            value = json.loads(text)
        except ValueError:
            return text
        return value if isinstance(value, str) else json.dumps(value)

    def requests(self, cid: str, limit: int | None = None) -> list[dict]:
        """The request inspector's entries for a container, newest first (`GET /_grokemu/requests`, docs/inspector.md):
        its fetchProxy requests, WebSocket sessions and queue calls, credentials redacted."""
        query = urllib.parse.urlencode({"container": cid, **({"limit": limit} if limit else {})})
        return self.json("GET", f"/_grokemu/requests?{query}")

    def delete_package(self, package: str) -> None:
        """Remove what publishing `package` created: its containers (stopped and removed from Docker) and images."""
        for image in self.images(package):
            self.request("DELETE", f"docker/images/{urllib.parse.quote(image['id'])}")
