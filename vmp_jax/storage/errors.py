"""What a storage error means: transient (the service was busy or the connection broke: the
same request may succeed a moment later) or not (a missing, truncated or undecodable file, a
refused credential). The client libraries retry a few times themselves (gcsfs about 30 s,
TensorStore about 2 minutes: engine.checkpoint.TENSORSTORE_GCS_RETRIES); `retrying` adds a
bounded backoff around a whole operation (a checkpoint's read, a file's upload), for a fault
that outlasts theirs, and leaves every other error to its caller at once."""

import time
from collections.abc import Callable, Iterator, Sequence

# HTTP statuses the storage services answer when busy or failing, not about the object: request
# timeout, too many requests, server errors (Google's guidance on which requests to retry).
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# The status names TensorStore (Orbax's arrays) reports a failed request with, as absl codes.
# Not RESOURCE_EXHAUSTED (also a device out of memory: retrying it only delays the real error)
# nor ABORTED (not about the service): a 429 or 5xx behind either is still caught by the
# "HTTP response code" in its message.
TRANSIENT_STATUS_NAMES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
# Exception kinds of the HTTP stacks (requests, aiohttp, urllib3) that mean a broken connection.
_BROKEN_CONNECTION_WORDS = ("Connection", "Timeout", "Disconnect", "Proxy", "Payload", "Transport")
_HTTP_STACKS = ("requests", "aiohttp", "urllib3", "google.auth.exceptions", "http.client")

RETRY_DELAYS_S = (2.0, 8.0, 30.0)  # waits between attempts: 4 attempts within about 40 s


def is_transient(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, is a transient storage fault: HTTP
    408, 429 or 5xx, a timeout, a reset or refused connection."""
    return any(_transient_one(e) for e in _chain(error))


def _transient_one(error: BaseException) -> bool:
    if isinstance(error, TimeoutError | ConnectionError):  # resets, refusals, socket timeouts
        return True
    status = getattr(error, "code", None)  # gcsfs' HttpError, google.api_core's errors
    if not isinstance(status, int):
        status = getattr(error, "status", None)  # aiohttp's ClientResponseError
    if isinstance(status, int) and status in TRANSIENT_STATUSES:
        return True
    kind = type(error)
    if kind.__module__.startswith(_HTTP_STACKS) and any(
        word in kind.__name__ for word in _BROKEN_CONNECTION_WORDS
    ):
        return True
    message = str(error)
    if message.startswith(TRANSIENT_STATUS_NAMES):  # TensorStore: "UNAVAILABLE: ..."
        return True
    return any(f"HTTP response code: {s}" in message for s in TRANSIENT_STATUSES)


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error, the errors it was raised from or during, and those of an ExceptionGroup."""
    seen, todo = set(), [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]


def retrying(
    attempt: Callable[[], object],
    what: str,
    delays: Sequence[float] | None = None,
    warn: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
):
    """attempt()'s result; a transient error is retried after each of `delays` (default
    RETRY_DELAYS_S) with a warning naming `what`, then raised; any other error at once."""
    for delay in (*(RETRY_DELAYS_S if delays is None else delays), None):
        try:
            return attempt()
        except Exception as error:
            if delay is None or not is_transient(error):
                raise
            warn(f"{what}: transient storage error ({_short(error)}); retrying in {delay:g} s")
            sleep(delay)


def _short(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200] if lines else ''}"
