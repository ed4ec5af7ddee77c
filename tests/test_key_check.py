"""The key check knows the API (issue 18.4): a base URL where something answers, but not the
Seeknetic API (a web page, a file server, a 404 that is not the API's JSON error), stops the
command with one line naming the URL and what answered, exit 2, before any file is decoded;
instead of taking any 404 as "key OK" and then retrying uploads for minutes or failing every job.

The unit tests judge answers through a MockTransport; the end-to-end tests run the CLI against a
real ``http.server`` file server and a real server that answers 404 to everything, on loopback.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _mock_api import KEY, Mock, ok, status
from _pipeline_helpers import ROOT

from seeknetic_prep.api.transport import Response
from seeknetic_prep.errors import AuthenticationError, NotTheAPIError, ServerError, exit_code_for

# ---------------------------------------------------------------------------------- the verdict


def test_the_apis_404_means_the_key_was_accepted() -> None:
    m = Mock(status(404, detail="Request auth-check-x not found"))
    m.client.check_auth()
    assert len(m.seen) == 1 and m.seen[0].path.startswith("/async_status/auth-check-")


@pytest.mark.parametrize(("answer", "named"), [
    (Response(404, {"Content-Type": "text/html;charset=utf-8", "Server": "SimpleHTTP/0.6 Python/3.11"},
              b"<!DOCTYPE HTML>\n<html><head><title>Error response</title></head></html>"),
     "404 text/html from 'SimpleHTTP/0.6 Python/3.11': <!DOCTYPE HTML> <html><head><title>Error"),
    (Response(404, {"Content-Type": "text/plain"}, b"nothing here"), "404 text/plain: nothing here"),
    (Response(404, {"Content-Type": "application/json"}, b'{"error": "no such route"}'),
     '404 application/json: {"error": "no such route"}'),
    (Response(404, {}, b""), "404 no content type)"),
    (Response(200, {"Content-Type": "text/html"}, b"<html>Welcome</html>"), "200 text/html: <html>Welcome"),
    (ok({"status": "ok"}), '200 application/json: {"status": "ok"}'),
    (Response(403, {"Content-Type": "text/html"}, b"Forbidden"), "403 text/html: Forbidden"),
])
def test_anything_else_is_not_the_api_in_one_line_naming_what_answered(answer: Response, named: str) -> None:
    m = Mock(answer)
    with pytest.raises(NotTheAPIError) as caught:
        m.client.check_auth()
    message = str(caught.value)
    assert message.startswith("http://mock does not answer as the Seeknetic API "
                              "(GET /async_status/auth-check-")
    assert named in message and "check --base-url" in message and "\n" not in message
    assert len(m.seen) == 1  # not retried: it will not change
    assert exit_code_for(caught.value) == 2


def test_a_refused_key_and_a_busy_api_are_what_they_were() -> None:
    with pytest.raises(AuthenticationError):
        Mock(status(401, detail="invalid API key")).client.check_auth()
    busy = Mock(status(503, detail="down"), status(503, detail="down"), status(404, detail="not found"))
    busy.client.check_auth()  # retried: an API that is there
    assert len(busy.seen) == 3
    with pytest.raises(ServerError):
        Mock(Response(502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>")).client.check_auth()


def test_a_page_that_echoes_the_key_does_not_print_it() -> None:
    m = Mock(lambda request: Response(404, {"Content-Type": "text/plain"},
                                      f"no route for key {request.headers['X-API-Key']}".encode()))
    with pytest.raises(NotTheAPIError) as caught:
        m.client.check_auth()
    assert KEY not in str(caught.value) and "[redacted]" in str(caught.value)


# ---------------------------------------------------------------------------------- over HTTP, end to end


class _NotFound(http.server.BaseHTTPRequestHandler):
    """Answers 404 with a line of plain text to every method and path."""

    def _nothing(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b"404 page not found\n"
        self.send_response(404)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _nothing

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(params=["file server", "404 to everything"])
def not_the_api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("<html>a static site</html>")
    handler = _NotFound if request.param == "404 to everything" else (
        lambda *a: _Files(*a, directory=str(tmp_path / "www")))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_run_against_a_server_that_is_not_the_api_stops_at_once(not_the_api: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    env["SEEKNETIC_API_KEY"] = "sk-test-not-the-api-0123"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "seeknetic_prep", "run", "fixtures/demo", "--out", str(out),
                           "--base-url", not_the_api], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    took = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr
    assert f"{not_the_api} does not answer as the Seeknetic API" in errors[0]
    assert "404 text/" in errors[0] and "check --base-url" in errors[0]
    assert "sk-test-not-the-api-0123" not in proc.stderr + proc.stdout
    assert not (out / "state.sqlite").exists() and not (out / "settings.json").exists()  # nothing decoded
    print(f"stopped in {took:.2f} s: {errors[0]}")  # the target is 5 s (not asserted: load)
