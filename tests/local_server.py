"""A local HTTP server on 127.0.0.1 for the download tests: it serves a folder, records every
requested path, and can cut a body short. Nothing here reaches the internet."""

import functools
import http.server
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Tuple, Type


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory quietly and records every requested path."""

    requests: list

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format, *args):
        pass


class ShortBodyHandler(CountingHandler):
    """Promises the full length but closes the connection after half of the body."""

    def do_GET(self):
        self.requests.append(self.path)
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.close_connection = True


def serve(
    root: Path, handler: Type[CountingHandler] = CountingHandler
) -> Tuple[http.server.ThreadingHTTPServer, threading.Thread, List[str]]:
    """Start a server for ``root`` on a free port; returns (server, thread, requests list)."""
    requests: List[str] = []
    handler_class = type("Handler", (handler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler_class, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    return server, thread, requests


def stop(server: http.server.ThreadingHTTPServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (once the probe is closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def files_under(folder: Path) -> List[str]:
    """Every path below ``folder`` (relative, sorted): what a download left in its cache."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


@contextmanager
def mirror_at(tmp_path: Path, monkeypatch, env: str, handler: Type, suffix: str = "") -> Iterator[Tuple[Path, list]]:
    """A server on ``tmp_path/mirror`` named by the environment variable ``env`` (the URL plus
    ``suffix``), with spacy-elmo's cache at ``tmp_path/cache``; yields (folder, requested paths)."""
    root = tmp_path / "mirror"
    root.mkdir()
    server, thread, requests = serve(root, handler)
    monkeypatch.setenv(env, f"http://127.0.0.1:{server.server_address[1]}{suffix}")
    monkeypatch.setenv("SPACY_ELMO_CACHE", str(tmp_path / "cache"))
    try:
        yield root, requests
    finally:
        stop(server, thread)
