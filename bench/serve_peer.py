"""Runs uvicorn with the arguments given (`serve_peer.py peer:app --workers 2
...`), with the fix a team would make once they saw the latency: the
listening socket made as TCP (protocol 6).

uvicorn's `--workers` path binds the socket itself with protocol 0, and
asyncio only turns Nagle's algorithm off (TCP_NODELAY) on accepted sockets
whose protocol is TCP, so every keep-alive answer's body (written after
its headers) waited for the client's delayed ACK, about 40 ms on Linux:
https://github.com/Kludex/uvicorn/issues/3149. The bridge, and the
benchmark's HTTP-limit server, set TCP_NODELAY too.
"""
import socket

import uvicorn
from uvicorn.config import Config

_bind_socket = Config.bind_socket


def _bind_tcp_socket(self):
    sock = _bind_socket(self)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
    return sock


Config.bind_socket = _bind_tcp_socket

if __name__ == "__main__":
    uvicorn.main()
