"""Fixtures that start a real upstream, a real keygate process and real clients."""
import base64
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from upstream import Reader, Upstream, ws_read_frame

KEYGATE = os.environ.get("KEYGATE_BIN") or os.path.join(os.path.dirname(__file__), "../../.build/debug/keygate")


_handed_out = set()


def free_port():
    """A loopback port nothing listens on now, and one this test run has not handed out before:
    the kernel can offer the same free port twice in a row, and a gate given one port for both
    its public and its admin socket exits at start."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


class Gate:
    """A keygate process with its own policy folder."""

    def __init__(self, tmp, upstream_port, extra="", public_routes='["GET /status/204"]', usage_log="usage.jsonl", workers=2):
        self.dir = tmp
        self.port = free_port()
        self.admin_port = free_port()
        self.upstream_port = upstream_port
        self.config = os.path.join(tmp, "keygate.yaml")
        with open(self.config, "w") as f:
            f.write(
                f"""listen: "127.0.0.1:{self.port}"
upstream: "http://127.0.0.1:{upstream_port}"
admin_listen: "127.0.0.1:{self.admin_port}"
workers: {workers}
keys_file: keys.jsonl
usage_log: {usage_log}
public_routes: {public_routes}
scopes:
  suppliers.read: ["GET /suppliers", "GET /suppliers/*"]
  echo: ["* /echo", "* /echo/**"]
{extra}"""
            )
        self.proc = None
        self.stderr_path = os.path.join(tmp, "gate.err")

    def cli(self, *args, input=None, check=True):
        r = subprocess.run([KEYGATE, *args, "--config", self.config], capture_output=True, text=True, input=input, timeout=30)
        if check and r.returncode != 0:
            raise AssertionError(f"keygate {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def create_key(self, *flags):
        out = self.cli("keys", "create", "--name", "test key", "--owner", "alice", "--json", *flags).stdout
        return json.loads(out)

    def start(self):
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([KEYGATE, "serve", "--config", self.config], stderr=self.stderr, stdout=subprocess.DEVNULL)
        assert wait_port(self.port), "keygate did not start: " + open(self.stderr_path).read()
        # The public socket listens a moment before the admin one: wait for both.
        with open(self.config) as f:
            if "admin_listen: off" not in f.read():
                assert wait_port(self.admin_port), "the admin endpoint did not start: " + open(self.stderr_path).read()
        # A port that answers may belong to someone else: the gate is up once it says so, after
        # binding both sockets, and a gate that could not bind one has exited by then.
        deadline = time.time() + 10
        while "keygate listening on" not in open(self.stderr_path).read():
            assert self.proc.poll() is None, f"keygate exited ({self.proc.returncode}) at start: " + open(self.stderr_path).read()
            assert time.time() < deadline, "keygate did not say it was listening: " + open(self.stderr_path).read()
            time.sleep(0.02)
        assert self.proc.poll() is None, f"keygate exited ({self.proc.returncode}) right after start: " + open(self.stderr_path).read()
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def usage_lines(self):
        path = os.path.join(self.dir, "usage.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def expires_at(self, key_id):
        """When the key expires, as a Unix time (its `expires_at` in `keys show`)."""
        from datetime import datetime
        text = json.loads(self.cli("keys", "show", key_id, "--json").stdout)["expires_at"]
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    def wait_usage_for(self, path, timeout=5.0):
        """The usage events for `path` once there is one (a tunnel's comes at its close)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            events = [e for e in self.usage_lines() if e["path"] == path]
            if events:
                return events
            time.sleep(0.05)
        return []

    def wait_usage(self, count, timeout=5.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            lines = self.usage_lines()
            if len(lines) >= count:
                return lines
            time.sleep(0.05)
        return self.usage_lines()


def console_gate_with(tmp, upstream_port, users, console_extra="", extra=""):
    """A gate with a console on a free port and the given console users (name, role, password);
    not started, so a test can add keys first."""
    port = free_port()
    g = Gate(tmp, upstream_port, extra=f'console: {{ listen: "127.0.0.1:{port}"{console_extra} }}\n' + extra)
    g.console_port = port
    for name, role, password in users:
        g.cli("console-users", "add", name, "--role", role, input=password + "\n")
    return g


@pytest.fixture
def upstream():
    u = Upstream()
    yield u
    u.stop()


@pytest.fixture
def gate(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port)
    yield g
    g.stop()


def curl(*args, timeout=60):
    """Runs curl; returns (status, headers dict, body bytes, exit code)."""
    r = subprocess.run(["curl", "-sS", "-D", "-", "-o", "-", "--max-time", str(timeout), *args], capture_output=True, timeout=timeout + 5)
    raw = r.stdout
    status, headers, body = 0, {}, b""
    # Skip interim (1xx) heads.
    while raw.startswith(b"HTTP/"):
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        raw = rest
        if status >= 200:
            break
    body = raw
    return status, headers, body, r.returncode


def metric(gate, name):
    """One value from the gate's /metrics (the line whose name, labels included, is `name`)."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{gate.admin_port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def read_response(f):
    """Reads one Content-Length-framed answer from a keep-alive socket file.
    Returns (status, headers with lower-case names, body)."""
    status = int(f.readline().split()[1])
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = f.read(int(headers["content-length"])) if "content-length" in headers else b""
    return status, headers, body


def raw_exchange(port, data, read_timeout=3.0, until_close=True):
    """Sends raw bytes, returns everything read until the gate closes (or the timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=read_timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if not until_close and b"\r\n\r\n" in out:
                break
    except socket.timeout:
        pass
    finally:
        s.close()
    return out


def open_fds(pid):
    """How many descriptors a process holds."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def connections_on(pid, port):
    """How many TCP connections (in any state but listening) a process holds on its local `port`
    (IPv4), read from /proc: its socket descriptors matched against the kernel's table."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            if local_port == port and fields[3] != "0A" and fields[9] in inodes:
                count += 1
    return count


def rss_kib(pid):
    """Resident memory of a process, KiB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))


def ws_open(gate, path, key=None, extra=(), wrap=None, sock=None):
    """Sends a handshake (on `sock` when given, through `wrap`, e.g. a TLS context's, when
    given); returns (socket, reader, status, headers)."""
    s = sock or socket.create_connection(("127.0.0.1", gate.port), timeout=10)
    if wrap:
        s = wrap(s)
    nonce = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", "Host: gate", "Connection: Upgrade", "Upgrade: websocket", f"Sec-WebSocket-Key: {nonce}",
             "Sec-WebSocket-Version: 13"]
    if key:
        lines.append(f"x-api-key: {key}")
    lines += list(extra)
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    reader = Reader(s)
    head = reader.until(b"\r\n\r\n").decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return s, reader, status, headers


def assert_closed_for_its_key(s, reader):
    """The gate's end of a tunnel whose key is no longer valid: a 1008 close frame, then EOF."""
    opcode, payload = ws_read_frame(reader)
    assert opcode == 0x8 and payload[:2] == (1008).to_bytes(2, "big")
    s.settimeout(3)
    assert s.recv(100) == b""
