"""The suite's network guard: once installed, a socket connection to any address outside
127.0.0.0/8 and ::1 raises ConnectionRefusedError naming the address, so that a test which
would reach a real service (a bucket, a metadata server, a package index) fails instead.

tests/conftest.py installs it in the test processes and puts this folder on PYTHONPATH, where
`sitecustomize` installs it in every Python process the tests start (`vmp train` in a
subprocess, `vmp launch` and its processes). Clients written in C++ (TensorStore, ArrayRecord)
open their own sockets: the emulator fixture aims them at 127.0.0.1 through their variables.
"""

import ipaddress
import socket

_ALLOWED_NAMES = {"localhost", "localhost.localdomain"}


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    if host in _ALLOWED_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it would resolve to anywhere


def install() -> None:
    if getattr(socket.socket, "_vmp_loopback_only", False):
        return
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def _check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise ConnectionRefusedError(
                f"the test suite's network guard refused a connection to {address!r}: tests "
                "reach nothing outside 127.0.0.0/8 (see tests/netguard/loopback_only.py)"
            )

    def guarded_connect(sock, address):
        _check(sock, address)
        return connect(sock, address)

    def guarded_connect_ex(sock, address):
        _check(sock, address)
        return connect_ex(sock, address)

    socket.socket.connect = guarded_connect
    socket.socket.connect_ex = guarded_connect_ex
    socket.socket._vmp_loopback_only = True
