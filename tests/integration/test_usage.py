"""The usage log as a product: every request logged, reports, rotation, admin endpoints."""
import gzip
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request

from conftest import KEYGATE, curl


def pipelined_requests(port, key, count, batch=100):
    """Sends `count` keep-alive requests in pipelined batches; returns how many got 200."""
    ok = 0
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rb")
    request = f"GET /status/204 HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n\r\n".encode()
    sent = 0
    while sent < count:
        n = min(batch, count - sent)
        s.sendall(request * n)
        for _ in range(n):
            status = f.readline()
            ok += status.startswith(b"HTTP/1.1 204")
            while f.readline() != b"\r\n":
                pass
        sent += n
        if sent % 900 == 0:  # stay under the 1,000 requests a connection may carry
            s.close()
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            f = s.makefile("rb")
    s.close()
    return ok


def test_every_request_is_logged_exactly_once(gate, upstream):
    k = gate.create_key()
    gate.start()
    results = []
    threads = [threading.Thread(target=lambda: results.append(pipelined_requests(gate.port, k["key"], 25000))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 100000
    lines = gate.wait_usage(100000, timeout=10)
    assert len(lines) == 100000
    assert len({l["request_id"] for l in lines}) == 100000
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{gate.admin_port}/metrics").read().decode()
    assert "keygate_usage_events_dropped_total 0" in metrics


def test_usage_report(gate, upstream, tmp_path):
    a = gate.create_key()
    b = gate.create_key("--scope", "suppliers.read")
    gate.start()
    for _ in range(3):
        curl("-H", f"x-api-key: {a['key']}", gate.url("/echo/12345"))
    curl("-H", f"x-api-key: {b['key']}", gate.url("/echo"))
    curl(gate.url("/echo"))
    lines = gate.wait_usage(5)
    log = os.path.join(gate.dir, "usage.jsonl")
    with open(log, "a") as f:
        f.write("garbage\n")
    r = gate.cli("usage", "--json")
    doc = json.loads(r.stdout)
    groups = {g["key"]: g for g in doc["groups"]}
    assert groups[a["id"]]["requests"] == 3 and groups[a["id"]]["allowed"] == 3
    assert groups[a["id"]]["top_routes"] == [{"route": "GET /echo/:id", "requests": 3}]
    assert groups[a["id"]]["owner"] == "alice" and groups[a["id"]]["distinct_client_ips"] == 1
    assert groups[b["id"]]["denied"] == {"scope_denied": 1}
    assert groups["-"]["denied"] == {"missing_key": 1}
    assert doc["malformed"] == 1 and "skipped 1 malformed" in r.stderr
    by_reason = {g["reason"]: g["requests"] for g in json.loads(gate.cli("usage", "--by", "reason", "--json").stdout)["groups"]}
    assert by_reason == {"allowed": 3, "scope_denied": 1, "missing_key": 1}
    only = json.loads(gate.cli("usage", "--key", a["id"], "--json").stdout)
    assert only["events"] == 3
    assert json.loads(gate.cli("usage", "--since", "2099-01-01", "--json").stdout)["events"] == 0
    # A rotated, compressed log reads the same.
    gz = tmp_path / "old.jsonl.gz"
    with open(log, "rb") as src, gzip.open(gz, "wb") as dst:
        dst.write(src.read())
    both = json.loads(gate.cli("usage", "--log", str(gz), "--log", log, "--json").stdout)
    assert both["events"] == 10
    # A live log ends in the event being written: left out and said so, not called malformed.
    complete = open(log, "rb").read()
    first = complete.splitlines(keepends=True)[0]
    live = tmp_path / "live.jsonl"
    live.write_bytes(complete + first[:40])
    r = gate.cli("usage", "--log", str(live), "--json")
    doc = json.loads(r.stdout)
    assert (doc["events"], doc["malformed"], doc["unfinished"]) == (5, 1, 1)
    assert "still being written" in r.stderr and "skipped 1 malformed" in r.stderr
    # A whole event without its newline is an event.
    live.write_bytes(complete + first.rstrip(b"\n"))
    doc = json.loads(gate.cli("usage", "--log", str(live), "--json").stdout)
    assert (doc["events"], doc["malformed"], doc["unfinished"]) == (6, 1, 0)
    table = gate.cli("usage").stdout
    assert a["id"] in table and "REQUESTS" in table
    r = gate.cli("usage", "--log", str(tmp_path / "missing.jsonl"), check=False)
    assert r.returncode == 1 and "cannot read usage log" in r.stderr


def test_sigusr1_reopens_the_log(gate, upstream):
    k = gate.create_key()
    gate.start()
    curl("-H", f"x-api-key: {k['key']}", gate.url("/echo"))
    gate.wait_usage(1)
    log = os.path.join(gate.dir, "usage.jsonl")
    os.rename(log, log + ".1")
    gate.proc.send_signal(signal.SIGUSR1)
    time.sleep(0.3)
    curl("-H", f"x-api-key: {k['key']}", gate.url("/echo"))
    assert len(gate.wait_usage(1)) == 1
    with open(log + ".1") as f:
        assert len(f.readlines()) == 1


def test_admin_endpoints(gate, upstream):
    k = gate.create_key()
    gate.start()
    curl("-H", f"x-api-key: {k['key']}", gate.url("/echo"))
    curl(gate.url("/echo"))
    base = f"http://127.0.0.1:{gate.admin_port}"
    assert json.loads(urllib.request.urlopen(base + "/healthz").read()) == {"status": "ok"}
    time.sleep(0.2)
    ready = json.loads(urllib.request.urlopen(base + "/readyz").read())
    assert ready["ready"] is True and ready["keys"] == 1
    metrics = urllib.request.urlopen(base + "/metrics").read().decode()
    for needle in ['keygate_requests_total{decision="allow",reason=""} 1', 'keygate_requests_total{decision="deny",reason="missing_key"} 1',
                   "keygate_request_duration_seconds_bucket", "keygate_upstream_duration_seconds_count 1", "keygate_connections_open",
                   "keygate_keys_loaded 1", 'keygate_reloads_total{result="ok"}', "keygate_usage_events_dropped_total 0"]:
        assert needle in metrics, needle
    # Never on the public listener.
    assert curl(gate.url("/metrics"))[0] == 401


def test_readyz_fails_without_upstream(tmp_path):
    from conftest import Gate, free_port
    g = Gate(str(tmp_path), free_port())
    g.start()
    try:
        time.sleep(0.3)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{g.admin_port}/readyz")
            assert False, "readyz should fail"
        except urllib.error.HTTPError as e:
            assert e.code == 503
    finally:
        g.stop()


def test_unwritable_usage_log_refuses_to_start(tmp_path):
    from conftest import Gate
    g = Gate(str(tmp_path), 9, extra="")
    with open(g.config) as f:
        text = f.read().replace("usage_log: usage.jsonl", "usage_log: /nonexistent/dir/usage.jsonl")
    with open(g.config, "w") as f:
        f.write(text)
    r = g.cli("serve", check=False)
    assert r.returncode == 1 and "/nonexistent/dir/usage.jsonl" in r.stderr
