"""Limits, timeouts, reloads and drain: the gate stays up and strict."""
import json
import os
import signal
import socket
import threading
import time

from conftest import Gate, connections_on, curl, open_fds, raw_exchange, read_response


def wait_open(gate, count, timeout=5.0):
    """Waits until the gate has accepted `count` client connections (its metrics say so)."""
    import urllib.request
    deadline = time.time() + timeout
    while time.time() < deadline:
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{gate.admin_port}/metrics").read().decode()
        if f"keygate_connections_open {count}\n" in metrics:
            return
        time.sleep(0.05)
    raise AssertionError(f"the gate never held {count} connections: " + [l for l in metrics.splitlines() if l.startswith("keygate_connections_open")][0])


def test_header_timeout_answers_408(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, extra="timeouts: { header_read: 1s }\n")
    g.start()
    try:
        s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        s.sendall(b"GET /echo HTTP/1.1\r\nHo")
        t = time.time()
        out = s.recv(4096)
        assert out.startswith(b"HTTP/1.1 408") and 0.9 < time.time() - t < 2.5
        assert s.recv(4096) == b""  # closed
    finally:
        g.stop()


def test_idle_keepalive_is_closed(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, extra="timeouts: { idle: 1s }\n")
    k = g.create_key()
    g.start()
    try:
        s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        s.sendall(f"GET /echo HTTP/1.1\r\nHost: x\r\nx-api-key: {k['key']}\r\n\r\n".encode())
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        t = time.time()
        assert s.recv(4096) == b"" and time.time() - t < 2.5
    finally:
        g.stop()


def test_body_limit_413(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, extra="limits: { max_body_bytes: 1000 }\n")
    k = g.create_key()
    g.start()
    try:
        status, _, body, _ = curl("-H", f"x-api-key: {k['key']}", "--data-binary", "x" * 2000, g.url("/echo"))
        assert status == 413
        status, _, body, _ = curl("-H", f"x-api-key: {k['key']}", "-H", "Transfer-Encoding: chunked", "--data-binary", "x" * 2000, g.url("/echo"))
        assert status == 413
        assert curl("-H", f"x-api-key: {k['key']}", "--data-binary", "x" * 999, g.url("/echo"))[0] == 200
    finally:
        g.stop()


def test_connection_cap_refuses_cleanly(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, extra="limits: { max_connections: 20 }\n")
    k = g.create_key()
    g.start()
    try:
        wait_open(g, 0)  # the start-up probe's connection has gone
        held = [socket.create_connection(("127.0.0.1", g.port)) for _ in range(20)]
        wait_open(g, 20)
        extra = socket.create_connection(("127.0.0.1", g.port), timeout=2)
        extra.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            got = extra.recv(100)
            assert got == b"", got
        except ConnectionResetError:
            pass
        # The held connections still work.
        held[0].sendall(f"GET /echo HTTP/1.1\r\nHost: x\r\nx-api-key: {k['key']}\r\n\r\n".encode())
        assert held[0].recv(65536).startswith(b"HTTP/1.1 200")
        for s in held:
            s.close()
        time.sleep(0.3)
        assert curl("-H", f"x-api-key: {k['key']}", g.url("/echo"))[0] == 200
    finally:
        g.stop()


def test_sighup_reloads_policy_and_keeps_old_on_error(gate, upstream):
    k = gate.create_key("--scope", "echo")
    gate.start()
    assert curl("-H", f"x-api-key: {k['key']}", gate.url("/echo"))[0] == 200
    with open(gate.config) as f:
        good = f.read()
    with open(gate.config, "w") as f:
        f.write(good.replace('echo: ["* /echo", "* /echo/**"]', 'echo: ["GET /other"]'))
    gate.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert curl("-H", f"x-api-key: {k['key']}", gate.url("/echo"))[0] == 403
    with open(gate.config, "w") as f:
        f.write(good + "bogus_field: 1\n")
    gate.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert curl("-H", f"x-api-key: {k['key']}", gate.url("/echo"))[0] == 403  # the last good policy stays
    err = open(gate.stderr_path).read()
    assert 'unknown field "bogus_field"' in err and "keeping the last good configuration" in err


def test_a_reload_that_changes_a_start_only_setting_says_so(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, extra="upstream_tls: { server_name: a.test }\n"
             'cluster: { redis: "redis://127.0.0.1:1/0", on_redis_down: local }\n')
    with open(g.config) as f:
        text = f.read().replace(f'upstream: "http://127.0.0.1:{upstream.port}"', f'upstream: "https://127.0.0.1:{upstream.port}"')
    with open(g.config, "w") as f:
        f.write(text)
    try:
        g.start()
        with open(g.config, "w") as f:
            f.write(text.replace("server_name: a.test", "server_name: b.test").replace("on_redis_down: local", "on_redis_down: deny"))
        g.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 5
        while "take effect only after a restart" not in open(g.stderr_path).read() and time.time() < deadline:
            time.sleep(0.05)
        err = open(g.stderr_path).read()
        assert "reload: upstream_tls, cluster.on_redis_down changed; these take effect only after a restart" in err, err
    finally:
        g.stop()


def test_the_admin_listener_answers_a_head_it_cannot_take(gate, upstream):
    gate.start()
    # Each fits in one read (16 KiB), so nothing is left unread to turn the close into a reset.
    for request, status in ((b"GET /" + b"a" * 12000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
                            (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"b" * 9000 + b"\r\n\r\n", b"431"),
                            (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n", b"400")):
        s = socket.create_connection(("127.0.0.1", gate.admin_port), timeout=5)
        s.sendall(request)
        got = s.recv(4096)
        s.close()
        assert got.startswith(b"HTTP/1.1 " + status), (status, got[:60])
    assert gate.proc.poll() is None


def test_requests_survive_reloads(gate, upstream):
    k = gate.create_key()
    gate.start()
    failures = []
    done = threading.Event()

    def hammer():
        s = socket.create_connection(("127.0.0.1", gate.port), timeout=5)
        f = s.makefile("rb")
        n = 0
        while not done.is_set():
            s.sendall(f"GET /echo HTTP/1.1\r\nHost: x\r\nx-api-key: {k['key']}\r\n\r\n".encode())
            status, _, _ = read_response(f)
            if status != 200:
                failures.append(status)
            n += 1
            if n % 500 == 0:
                s.close()
                s = socket.create_connection(("127.0.0.1", gate.port), timeout=5)
                f = s.makefile("rb")

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(10):
        gate.cli("keys", "create", "--name", f"reload {i}")
        gate.proc.send_signal(signal.SIGHUP)
        time.sleep(0.15)
    done.set()
    for t in threads:
        t.join()
    assert failures == []


def test_per_address_cap(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, extra="limits: { max_connections_per_ip: 5 }\n")
    k = g.create_key()
    g.start()
    try:
        wait_open(g, 0)
        held = [socket.create_connection(("127.0.0.1", g.port)) for _ in range(5)]
        wait_open(g, 5)
        extra = socket.create_connection(("127.0.0.1", g.port), timeout=2)
        extra.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            got = extra.recv(100)
            assert got == b"", got
        except ConnectionResetError:
            pass
        for s in held:
            s.close()
        time.sleep(0.3)
        # Closing frees the address's share.
        assert curl("-H", f"x-api-key: {k['key']}", g.url("/echo"))[0] == 200
    finally:
        g.stop()


def cpu_ticks(pid):
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{t}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def test_the_admin_listener_caps_its_connections_and_never_spins(gate, upstream):
    """A flood of idle connections on the admin port: past 64 they are closed as they come,
    so the proxy keeps its descriptors; and when the process runs out of descriptors, the admin
    loop pauses instead of spinning on a listener that stays readable."""
    import resource

    k = gate.create_key()
    gate.start()
    fds = lambda: open_fds(gate.proc.pid)
    held = [socket.create_connection(("127.0.0.1", gate.admin_port), timeout=5) for _ in range(100)]
    time.sleep(0.5)
    # Counted as connections on the admin port, not as all descriptors: the gate opens others
    # now and then (the key-state file, its lock, a readiness probe).
    admin = connections_on(gate.proc.pid, gate.admin_port)
    assert 0 < admin <= 64, f"the gate holds {admin} admin connections"
    # The last ones were closed at once.
    held[-1].settimeout(2)
    assert held[-1].recv(10) == b""
    assert curl("-H", f"x-api-key: {k['key']}", gate.url("/echo"))[0] == 200
    for s in held:
        s.close()
    time.sleep(0.3)

    # Out of descriptors: the admin flood now fails at accept.
    limits = resource.prlimit(gate.proc.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(gate.proc.pid, resource.RLIMIT_NOFILE, (fds() + 8, limits[1]))
    held = []
    for _ in range(40):
        try:
            held.append(socket.create_connection(("127.0.0.1", gate.admin_port), timeout=1))
        except OSError:
            break
    start = cpu_ticks(gate.proc.pid)
    time.sleep(2)
    used = cpu_ticks(gate.proc.pid) - start
    assert used < 60, f"{used} CPU ticks in 2 s with accept failing: a loop is spinning"
    assert "admin_listen: accept failed" in open(gate.stderr_path).read()
    for s in held:
        s.close()
    resource.prlimit(gate.proc.pid, resource.RLIMIT_NOFILE, limits)
    time.sleep(0.5)
    status, _, body, _ = curl(f"http://127.0.0.1:{gate.admin_port}/healthz")
    assert status == 200, body
