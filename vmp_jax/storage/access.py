"""A command's bucket URLs checked before any work: one request per URL, no retries, at most
ACCESS_TIMEOUT_SECONDS, and an error naming the URL and the cause (no bucket, credentials
refused, no permission, nothing at the path, unreachable). The client libraries would retry
most of these for minutes first (gcsfs retries a refused credential for about 35 s, then
logs a traceback), deep inside a data loader or a checkpoint save."""

import concurrent.futures
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable

from vmp_jax.storage import paths
from vmp_jax.storage.errors import TRANSIENT_STATUSES

ACCESS_TIMEOUT_SECONDS = 20.0
CREDENTIALS_HELP = (
    "set GOOGLE_APPLICATION_CREDENTIALS to a service account key, or run "
    "`gcloud auth application-default login`; on a Cloud TPU or GPU VM, give the VM's service "
    "account access to the bucket"
)


class StorageAccessError(OSError):
    """A URL that cannot be used; the message names it and the cause."""


def check_access(inputs: Iterable[str] = (), outputs: Iterable[str] = ()) -> None:
    """Raises StorageAccessError for the first URL that fails: `inputs` must hold something
    (an object, or objects under the prefix), `outputs` need only a reachable bucket. Local
    paths are skipped (their own errors name them), as are protocols other than gs://."""
    wanted = {u: True for u in inputs if u and _is_gcs(u)}
    wanted.update({u: False for u in outputs if u and _is_gcs(u) and u not in wanted})
    for url, must_exist in wanted.items():
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(_check_one, url, must_exist)
            try:
                future.result(timeout=ACCESS_TIMEOUT_SECONDS)
            except concurrent.futures.TimeoutError:
                raise StorageAccessError(
                    f"{url}: no answer from the storage service within "
                    f"{ACCESS_TIMEOUT_SECONDS:g} s (network, proxy or credential lookup)"
                ) from None


def _is_gcs(url: str) -> bool:
    return paths.is_url(url) and url.split("://", 1)[0] in ("gs", "gcs")


def _check_one(url: str, must_exist: bool) -> None:
    bucket, _, name = url.split("://", 1)[1].partition("/")
    fs, _ = paths.filesystem(url)
    headers = {}
    try:
        fs.credentials.apply(headers)
    except Exception as error:  # noqa: BLE001 - whatever google-auth raises
        raise StorageAccessError(
            f"{url}: no usable credentials ({type(error).__name__}: {error}); " + CREDENTIALS_HELP
        ) from error
    query = urllib.parse.urlencode({"prefix": name.rstrip("/"), "maxResults": 1})
    where = f"{fs._location}/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o?{query}"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(where, headers=headers), timeout=ACCESS_TIMEOUT_SECONDS
        ) as response:
            listing = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        raise StorageAccessError(f"{url}: {_cause(error.code, bucket)}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise StorageAccessError(f"{url}: the storage service is unreachable ({reason})") from None
    if must_exist and not listing.get("items"):
        raise StorageAccessError(f"{url}: no such object (nothing at this path in {bucket})")


def _cause(status: int, bucket: str) -> str:
    if status == 404:
        return f"the bucket {bucket!r} does not exist"
    if status == 401:
        return "credentials refused (401 Invalid Credentials): " + CREDENTIALS_HELP
    if status == 403:
        return (
            f"permission denied (403): the account may not list or read objects of {bucket!r} "
            "(it needs roles/storage.objectUser, or objectViewer for data only)"
        )
    if status in TRANSIENT_STATUSES:
        return f"the storage service answered HTTP {status} (busy or failing: try again)"
    return f"the storage service answered HTTP {status}"
