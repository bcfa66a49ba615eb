"""`keygate demo` (what `make demo` runs): the printed curl lines work, and so does the console
sign-in it prints; its upstream streams events and echoes WebSocket frames, and the revoke line it
prints closes an open tunnel."""
import os
import re
import signal
import socket
import subprocess
import time
from types import SimpleNamespace

from conftest import KEYGATE, assert_closed_for_its_key, curl, free_port, wait_port, ws_open
from console_client import ConsoleClient
from upstream import Reader, ws_frame, ws_read_frame


def test_demo_prints_lines_that_work(tmp_path):
    ports = [free_port() for _ in range(4)]
    out = open(os.path.join(tmp_path, "out.txt"), "w+")
    p = subprocess.Popen([KEYGATE, "demo", "--dir", str(tmp_path / "demo"), "--port", str(ports[0]), "--upstream-port", str(ports[1]),
                          "--admin-port", str(ports[2]), "--console-port", str(ports[3])], stdout=out, stderr=subprocess.DEVNULL)
    try:
        assert wait_port(ports[0]) and wait_port(ports[3])
        deadline = time.time() + 5
        while "Ctrl-C" not in open(out.name).read() and time.time() < deadline:
            time.sleep(0.05)
        text = open(out.name).read()
        base = f"http://127.0.0.1:{ports[0]}"
        key = re.search(r"x-api-key: (kg_\w+)' " + re.escape(base), text).group(1)
        read_key = re.search(r"Bearer (kg_\w+)", text).group(1)
        assert curl(base + "/suppliers")[0] == 401
        assert curl("-H", f"x-api-key: {key}", base + "/suppliers")[0] == 200
        assert curl("-H", f"Authorization: Bearer {read_key}", base + "/suppliers/42")[0] == 200
        assert curl("-H", f"Authorization: Bearer {read_key}", "-X", "POST", base + "/suppliers")[0] == 403
        password = re.search(r"user demo, password (\w+)", text).group(1)
        c = ConsoleClient(ports[3])
        assert c.login("demo", password)[0] == 200
        assert len(c.request("GET", "/api/keys")[2]) == 2

        # Server-sent events: the first arrives at once, the next a second later, not at the end.
        s = socket.create_connection(("127.0.0.1", ports[0]), timeout=10)
        started = time.monotonic()
        s.sendall(f"GET /events HTTP/1.1\r\nHost: demo\r\nx-api-key: {key}\r\n\r\n".encode())
        events = Reader(s)
        assert b"text/event-stream" in events.until(b"\r\n\r\n")
        assert b"data: {\"tick\": 1" in events.until(b"\n\n")
        assert time.monotonic() - started < 0.9
        assert b"data: {\"tick\": 2" in events.until(b"\n\n")
        s.close()

        # The WebSocket echo, then the printed revoke line closes the tunnel with a 1008 frame.
        ws, reader, status, _ = ws_open(SimpleNamespace(port=ports[0]), "/ws", key)
        assert status == 101
        opcode, greeting = ws_read_frame(reader)
        assert opcode == 0x1 and b"revoking the key closes this tunnel" in greeting
        big = os.urandom(100 << 10)
        ws.sendall(ws_frame(0x1, b"hello", mask=True) + ws_frame(0x2, big, mask=True))
        assert ws_read_frame(reader) == (0x1, b"hello")
        assert ws_read_frame(reader) == (0x2, big)
        revoke = re.search(r"keygate (keys revoke \w+ --config \S+)", text).group(1).split()
        revoked_at = time.monotonic()
        subprocess.run([KEYGATE, *revoke], check=True, capture_output=True)
        assert_closed_for_its_key(ws, reader)
        assert time.monotonic() - revoked_at < 1.5
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=15)
