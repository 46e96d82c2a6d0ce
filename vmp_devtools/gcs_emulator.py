"""A Google Cloud Storage emulator on 127.0.0.1, for the tests and the bucket figures of
`vmp bench-data --bucket`: gcp-storage-emulator (a dev dependency) with these changes. Test
equipment, outside the product package: it patches the stub's private internals.

- Object listings honour `startOffset` and `endOffset`. The stub ignores them, and
  TensorStore's prefix delete (Orbax removing an old checkpoint) lists a range: with the stub
  it would delete every object in the bucket.
- GET /_vmp/stats returns {"requests", "bytes_sent"} since the last DELETE /_vmp/stats: the
  requests and response bytes a reader cost, counted on the server.
- Suffix ranges (`Range: bytes=-N`, the last N bytes) are served as such; the stub sends the
  whole object, and ArrayRecord, which reads a file's footer that way, fails on it.
- Downloads carry the object's generation (`x-goog-generation`, as the real service sends):
  TensorStore reads it with every object and rejects a download without one.
- Connections are taken on threads, with a deep listen queue: the clients open many at once
  (gcsfs, TensorStore), which the stub's one-at-a-time server refuses. The requests themselves
  are still handled one at a time (the responses written in parallel): the stub's storage is
  not thread-safe (a resumable upload racing another request lost its session).
- A bucket named `refused-...` answers 401 Invalid Credentials to every request, as the real
  service does to credentials it refuses.
- Faults on demand: POST /_vmp/faults {"prefix", "count", "status"} makes the next `count`
  requests for objects whose `bucket/name` starts with `prefix` answer `status` (503 by
  default), as a busy or failing service does; GET /_vmp/faults says how many were served.

Clients find it through the variables `environment` returns: every Google client library's
endpoint (gcsfs and google-cloud-storage, TensorStore for Orbax, ArrayRecord for Grain)
points at it, credentials are dummies, and the metadata server (where the libraries look for
credentials on a cloud VM) is a closed port on 127.0.0.1, so that nothing leaves the machine.

    python vmp_devtools/gcs_emulator.py --port 9023 --bucket vmp-test
"""

import argparse
import contextlib
import http.server
import importlib.util
import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from urllib.parse import parse_qs, unquote, urlparse

REFUSED_PREFIX = "refused-"
INSTALL_HELP = (
    "the GCS emulator needs the dev extra's gcp-storage-emulator: pip install -e '.[dev]' "
    "(or pip install gcp-storage-emulator)"
)
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy to loopback


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(url: str, metadata_port: int) -> dict[str, str]:
    """The variables that aim every Google storage client at the emulator at `url`, with
    dummy credentials, and every credential lookup at a closed port on 127.0.0.1."""
    metadata = f"127.0.0.1:{metadata_port}"
    return {
        "STORAGE_EMULATOR_HOST": url,  # google-cloud-storage, gcsfs
        "FSSPEC_GCS_TOKEN": "anon",  # gcsfs: no credential lookup
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # else a 60 s gRPC bucket-type lookup
        "TENSORSTORE_GCS_HTTP_URL": url,  # Orbax's arrays
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "dummy",  # TensorStore's credentials
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,  # ArrayRecord (Grain), google-cloud-cpp
        "NO_GCE_CHECK": "true",
        "GCE_METADATA_HOST": metadata,
        "GCE_METADATA_IP": metadata,
        "GCE_METADATA_ROOT": metadata,
        "GOOGLE_CLOUD_PROJECT": "vmp-test",
        "NO_PROXY": "127.0.0.1,localhost",  # a proxy set for the real service is not used here
        "no_proxy": "127.0.0.1,localhost",
    }


def require() -> None:
    """ImportError saying what to install when gcp-storage-emulator is missing (before the
    subprocess that needs it starts, rather than a traceback from inside it)."""
    if importlib.util.find_spec("gcp_storage_emulator") is None:
        raise ImportError(INSTALL_HELP)


class Emulator:
    """The emulator in a subprocess with `bucket` made; `url`, `env` (see `environment`),
    `stats()`, `reset_stats()` and `fail_next()`. A context manager: stopped at exit."""

    def __init__(self, bucket: str = "vmp-test"):
        require()
        self.bucket, self.port = bucket, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = environment(self.url, free_port())
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by stop()
            prefix="vmp-gcs-emulator-", suffix=".log"
        )
        # Run as a file: it needs only the standard library and the stub, wherever it sits.
        argv = [sys.executable, __file__, "--port", str(self.port), "--bucket", bucket]
        self._process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_until_up(timeout=30)

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the GCS emulator exited: {self.log()}")
            with contextlib.suppress(OSError):
                self.stats()
                return
            time.sleep(0.05)
        log = self.log()
        self.stop()
        raise RuntimeError(f"the GCS emulator did not answer within {timeout} s: {log}")

    def use_in_this_process(self) -> dict[str, str | None]:
        """Sets `env` in os.environ (inherited by every process started from now on) and in
        fsspec's configuration, which read the environment when it was imported; returns the
        variables' values before, for `restore`."""
        before = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        if "fsspec.config" in sys.modules:
            sys.modules["fsspec.config"].set_conf_env(sys.modules["fsspec.config"].conf)
        return before

    @staticmethod
    def restore(before: dict[str, str | None]) -> None:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def log(self) -> str:
        with open(self._log.name) as f:
            return f.read()[-2000:]

    def stats(self) -> dict:
        """{"requests", "bytes_sent"} since the last reset_stats."""
        return self._call("GET")

    def reset_stats(self) -> None:
        self._call("DELETE")

    def fail_next(self, count: int, prefix: str, status: int = 503) -> None:
        """The next `count` requests for objects whose `bucket/name` starts with `prefix`
        answer HTTP `status`; replaces any faults still pending."""
        body = {"prefix": prefix, "count": count, "status": status}
        self._call("POST", "faults", body)

    def faults_served(self) -> int:
        """How many injected faults were answered since the last `fail_next`."""
        return self._call("GET", "faults")["served"]

    def _call(self, method: str, what: str = "stats", body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/_vmp/{what}", data=data, method=method)
        with _DIRECT.open(request, timeout=5) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.stop()


def _patch(server_module, storage_module) -> None:
    """The changes of the module docstring, on gcp-storage-emulator's Router, Response,
    Storage and HTTP server (its handler table holds its functions, so they are wrapped where
    they meet)."""
    stats = {"requests": 0, "bytes_sent": 0}
    faults = {"prefix": "", "count": 0, "status": 503, "served": 0}  # see fail_next
    handle, close, to_json = (
        server_module.Router.handle,
        server_module.Response.close,
        server_module.Response.json,
    )
    get_file_obj = storage_module.Storage.get_file_obj
    served = threading.local()  # the object resource the current request read
    one_at_a_time, counting = threading.Lock(), threading.Lock()

    def recorded_get_file_obj(storage, *args, **kwargs):
        served.obj = get_file_obj(storage, *args, **kwargs)
        return served.obj

    get_header = server_module.Request.get_header

    def suffix_range_as_offsets(request, key, default=None):
        value = get_header(request, key, default)
        obj = getattr(served, "obj", None)
        suffix = re.fullmatch(r"\s*bytes=-(\d+)\s*", value or "")
        if key.lower() == "range" and suffix and obj:
            return f"bytes={max(int(obj['size']) - int(suffix[1]), 0)}-"
        return value

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

    def routed(router, method):
        handler = router._request_handler
        path = urlparse(handler.path).path
        if path == "/_vmp/stats":
            if method == "DELETE":
                stats.update(requests=0, bytes_sent=0)
            return _answer(handler, 200, stats)
        if path == "/_vmp/faults":
            with counting:
                if method == "POST":
                    length = int(handler.headers.get("Content-Length") or 0)
                    faults.update(json.loads(handler.rfile.read(length)), served=0)
                return _answer(handler, 200, faults)
        with counting:
            stats["requests"] += 1
            fault = _take_fault(faults, _object_of(handler.path))
        served.obj = None
        if fault:  # the request's body unread: the connection closes after the answer
            handler.close_connection = True
            error = {"code": fault, "message": "injected fault (the emulator's fail_next)"}
            return _answer(handler, fault, {"error": error}, close=True)
        bucket = _bucket_of(path)
        if bucket and bucket.startswith(REFUSED_PREFIX):
            error = {"code": 401, "message": "Invalid Credentials", "errors": []}
            return _answer(handler, 401, {"error": error})
        return handle(router, method)

    def counted_close(response):
        obj = getattr(served, "obj", None)
        if obj and response.status.value in (200, 206) and "alt=media" in _query(response):
            response["x-goog-generation"] = obj["generation"]
            response["x-goog-metageneration"] = obj["metageneration"]
        content = response._content
        with counting:
            stats["bytes_sent"] += len(content.encode() if isinstance(content, str) else content)
        return close(response)

    def ranged_json(response, obj):
        if isinstance(obj, dict) and obj.get("kind") == "storage#objects":
            query = parse_qs(_query(response))
            start = query.get("startOffset", [""])[0]
            end = query.get("endOffset", [""])[0]
            keep = lambda name: name >= start and (not end or name < end)  # noqa: E731
            obj = {
                **obj,
                "items": [i for i in obj.get("items", []) if keep(i["name"])],
                "prefixes": [p for p in obj.get("prefixes", []) if keep(p)],
            }
        return to_json(response, obj)

    def locked(function):
        def one_at_a_time_handler(*args, **kwargs):
            with one_at_a_time:  # the storage; the response is written outside the lock
                return function(*args, **kwargs)

        return one_at_a_time_handler

    for _, handlers in server_module.HANDLERS:
        for method in list(handlers):
            handlers[method] = locked(handlers[method])
    server_module.objects.insert = locked(server_module.objects.insert)
    storage_module.Storage.get_file_obj = recorded_get_file_obj
    server_module.Request.get_header = suffix_range_as_offsets
    server_module.server.HTTPServer = Server  # what the stub's API thread serves with
    server_module.Router.handle = routed
    server_module.Response.close = counted_close
    server_module.Response.json = ranged_json


def _answer(handler, status: int, body: dict, close: bool = False) -> None:
    """A JSON response written straight to the client (outside the stub's router)."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    if close:
        handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(data)


def _take_fault(faults: dict, target: str | None) -> int | None:
    """The status to answer a request for `target` with, if a pending fault matches it."""
    if faults["count"] <= 0 or target is None or not target.startswith(faults["prefix"]):
        return None
    faults["count"] -= 1
    faults["served"] += 1
    return int(faults["status"])


def _object_of(url: str) -> str | None:
    """`bucket/name` of the object (or listing prefix, or upload) a request is about:
    .../b/<bucket>/o/<name>, .../b/<bucket>/o?name=<name> or ?prefix=<prefix>, or the
    XML-style /<bucket>/<name>."""
    parsed = urlparse(url)
    parts = parsed.path.split("/")
    bucket = _bucket_of(parsed.path)
    if bucket is None:
        return None
    if "o" in parts:
        name = "/".join(parts[parts.index("o") + 1 :])
        if not name:
            query = parse_qs(parsed.query)
            name = (query.get("name") or query.get("prefix") or [""])[0]
        return f"{bucket}/{unquote(name)}"
    return unquote(parsed.path.lstrip("/"))


def _query(response) -> str:
    return urlparse(response._handler.path).query


def _bucket_of(path: str) -> str | None:
    """The bucket a request names: /storage/v1/b/<bucket>/..., /upload/..., /download/...,
    or /<bucket>/<object> (the XML-style path)."""
    parts = [p for p in path.split("/") if p]
    if "b" in parts[:4]:
        at = parts.index("b")
        return parts[at + 1] if at + 1 < len(parts) else None
    return parts[0] if parts and parts[0] not in ("storage", "upload", "download") else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bucket", action="append", default=[])
    args = parser.parse_args(argv)
    from gcp_storage_emulator import server, storage
    from gcp_storage_emulator.handlers import buckets

    logging.basicConfig(level=logging.WARNING)
    _patch(server, storage)
    emulator = server.create_server("127.0.0.1", args.port, in_memory=True)
    for bucket in args.bucket:
        buckets.create_bucket(bucket, emulator._storage)
    emulator.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
