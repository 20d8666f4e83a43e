"""The plugin server process (plugin.wsgi.serve) with a stand-in WSGI app on a temp socket:
root-only socket, pid file, one request per connection, clean stop with requests in flight."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from plugin import server

ROOT = Path(__file__).parents[3]
APP = """
import json, sys, time
from plugin.wsgi import serve

def app(environ, start_response):
    if environ["PATH_INFO"] == "/Slow":
        time.sleep(1.0)
    body = json.dumps({"path": environ["PATH_INFO"], "len": environ.get("CONTENT_LENGTH", ""),
                       "got": environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)).decode(),
                       "Implements": ["NetworkDriver"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

sys.exit(serve(sys.argv[1], sys.argv[2], app))
"""


def start(tmp_path):
    sock, pid = str(tmp_path / "p.sock"), str(tmp_path / "p.pid")
    proc = subprocess.Popen([sys.executable, "-c", APP, sock, pid], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    server.wait_ready(sock, alive=lambda: proc.poll() is None, timeout=30)
    return proc, sock, pid


def stop(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_serves_on_a_root_only_socket_and_writes_its_pid(tmp_path):
    (tmp_path / "p.sock").write_text("stale")       # a leftover file is replaced
    proc, sock, pid = start(tmp_path)
    try:
        assert oct(os.stat(sock).st_mode & 0o777) == "0o700"
        assert int(Path(pid).read_text()) == proc.pid
        status, answer = server.call(sock, "NetworkDriver.CreateNetwork", {"NetworkID": "n1"})
        assert status == 200
        assert answer["path"] == "/NetworkDriver.CreateNetwork" and json.loads(answer["got"]) == {"NetworkID": "n1"}
    finally:
        stop(proc)


def test_one_request_per_connection(tmp_path):
    proc, sock, _ = start(tmp_path)
    try:
        conn = server._UnixConnection(sock, 5)
        conn.request("POST", "/Plugin.Activate", body="")
        response = conn.getresponse()
        assert response.version == 10 and response.getheader("Connection", "close").lower() == "close"
        response.read()
        conn.close()
    finally:
        stop(proc)


def test_sigterm_finishes_the_request_in_flight_then_cleans_up(tmp_path):
    proc, sock, pid = start(tmp_path)
    got = {}
    try:
        slow = threading.Thread(target=lambda: got.update(answer=server.call(sock, "Slow", timeout=10)))
        slow.start()
        time.sleep(0.3)  # the request is being handled
        proc.send_signal(signal.SIGTERM)
        slow.join(15)
        assert got["answer"][0] == 200 and got["answer"][1]["path"] == "/Slow"
        assert proc.wait(15) == 0
        assert not os.path.exists(sock) and not os.path.exists(pid)
    finally:
        stop(proc)


def test_server_argv_names_the_module_node_stop_looks_for():
    argv = server.server_argv("/run/p.sock", "/run/p.pid", "/log/p.log")
    assert argv[1:4] == ["-m", "plugin.wsgi", "--socket"] and b"plugin.wsgi" in " ".join(argv).encode()
