"""A TCP front for the S3 server that a test can take down and bring back, on the same port.

`stop()` is what a crashed object store looks like to its clients: the listening socket is closed
(new connections are refused by the kernel) and every open connection is reset (SO_LINGER 0: a
request in flight, or one on a pooled keep-alive connection, fails with "connection reset").
`start()` listens on the same port again; the data is unchanged, since it lives in the moto server
behind. `stall()` keeps accepting connections but never answers (a hung server: only a client
time-out ends the wait).

The proxy also notes every S3 request line it forwards (`requests`: (monotonic time, method, path)),
so a test can tell which shard reads happened before, during and after an outage.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time

REQUEST_LINE = re.compile(rb"(GET|HEAD|PUT|POST|DELETE) (/[^ ?]*)\S* HTTP/1\.[01]\r\n")


class OutageProxy:
    def __init__(self, target_port: int):
        self.target_port = target_port
        self.lock = threading.Lock()
        self.connections: list[socket.socket] = []
        self.requests: list[tuple[float, str, str]] = []
        self.stalled = False
        self.listener = socket.create_server(("127.0.0.1", 0))  # SO_REUSEADDR: the port can be bound again at once
        self.port = self.listener.getsockname()[1]
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._serve(self.listener)

    # ------------------------------------------------------------ control

    def stop(self) -> None:
        """Close the port and reset every open connection."""
        with self.lock:
            listener, self.listener = self.listener, None
            connections, self.connections = self.connections, []
        if listener is not None:
            listener.close()
        for sock in connections:
            reset(sock)

    def start(self) -> None:
        """Listen on the same port again and forward normally."""
        self.stalled = False
        with self.lock:
            if self.listener is None:
                self.listener = socket.create_server(("127.0.0.1", self.port))
                self._serve(self.listener)

    def stall(self) -> None:
        """Accept connections (and reset the open ones) but answer nothing."""
        self.stalled = True
        with self.lock:
            connections, self.connections = self.connections, []
        for sock in connections:
            reset(sock)

    def close(self) -> None:
        self.stop()

    # ------------------------------------------------------------ forwarding

    def _serve(self, listener: socket.socket) -> None:
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by stop()
            with self.lock:
                self.connections.append(client)
            if self.stalled:
                continue  # held open, never read, never answered
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                reset(client)
                continue
            with self.lock:
                self.connections.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        pump(source, sink, on_data=self._note_requests if from_client else None)

    def _note_requests(self, data: bytes) -> None:
        now = time.monotonic()
        for method, path in REQUEST_LINE.findall(data):
            self.requests.append((now, method.decode(), path.decode()))


def pump(source: socket.socket, sink: socket.socket, on_data=None) -> None:
    """Forward source -> sink until either side closes; then shut both down. `on_data(bytes)` sees each chunk."""
    try:
        while data := source.recv(65536):
            if on_data is not None:
                on_data(data)
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        source.close()


def reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER on, timeout 0), as the kernel does for a process that died mid-request."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass
