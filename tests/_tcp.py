"""A bare TCP server on loopback for tests that need real sockets under an HTTP client or the
throttling proxy: each connection is handed to ``talk``, serially or on a thread of its own."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


def tcp_server(talk: Callable[[socket.socket], object], *, threaded: bool = False,
               recv_buffer: int | None = None) -> tuple[socket.socket, tuple[str, int]]:
    """Listen on 127.0.0.1 and run ``talk(conn)`` for each connection, then close it;
    ``threaded``: each on its own thread (a talk that blocks does not hold the next);
    ``recv_buffer``: SO_RCVBUF of the accepted sockets. Close the listener to stop."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if recv_buffer is not None:  # set before listen: accepted sockets inherit it
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def run(conn: socket.socket) -> None:
        with conn:
            talk(conn)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            if threaded:
                threading.Thread(target=run, args=(conn,), daemon=True).start()
            else:
                run(conn)

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()
