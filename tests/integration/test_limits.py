"""Per-key rate limits and quotas."""
import json
import socket
import time

from conftest import Gate, curl, read_response


def burst(gate, key, n, path="/echo"):
    """n requests on one connection, as fast as possible; returns the (status, headers) list."""
    s = socket.create_connection(("127.0.0.1", gate.port), timeout=5)
    f = s.makefile("rb")
    out = []
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n\r\n".encode() * n)
    for _ in range(n):
        status, headers, _ = read_response(f)
        out.append((status, headers))
        if headers.get("connection") == "close":
            break
    s.close()
    return out


def test_rate_limit_with_burst_and_headers(gate, upstream):
    k = gate.create_key("--rate", "10/s", "--burst", "5")
    gate.start()
    answers = burst(gate, k["key"], 20)
    statuses = [a[0] for a in answers]
    assert statuses.count(200) == 5, statuses
    assert statuses.count(429) == 15
    ok = answers[0][1]
    assert ok["ratelimit-limit"] == "10" and ok["ratelimit-remaining"] == "4" and int(ok["ratelimit-reset"]) >= 1
    limited = [h for s, h in answers if s == 429][0]
    assert int(limited["retry-after"]) >= 1 and limited["ratelimit-remaining"] == "0"
    time.sleep(0.35)  # 10/s: about three more slots
    assert 2 <= [a[0] for a in burst(gate, k["key"], 6)].count(200) <= 4
    reasons = [l["reason"] for l in gate.wait_usage(26)]
    assert reasons.count("rate_limited") >= 15
    by = {g["reason"]: g["requests"] for g in json.loads(gate.cli("usage", "--by", "reason", "--json").stdout)["groups"]}
    assert by["rate_limited"] == reasons.count("rate_limited")


def test_policy_default_rate_applies_to_keys_without_their_own(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, extra="limits: { default_rate: 5/s, default_burst: 2 }\n")
    plain = g.create_key()
    own = g.create_key("--rate", "100/s", "--burst", "50")
    g.start()
    try:
        assert [a[0] for a in burst(g, plain["key"], 5)].count(200) == 2
        assert [a[0] for a in burst(g, own["key"], 20)].count(200) == 20
    finally:
        g.stop()


def test_quota_survives_restart_and_shows(gate, upstream):
    k = gate.create_key("--quota", "3/day")
    gate.start()
    statuses = [a[0] for a in burst(gate, k["key"], 5)]
    assert statuses == [200, 200, 200, 429, 429]
    gate.stop()
    shown = json.loads(gate.cli("keys", "show", k["id"], "--json").stdout)
    assert shown["quota_used"] == 3 and shown["quota_remaining"] == 0
    gate.start()
    status, headers, body, _ = curl("-H", f"x-api-key: {k['key']}", gate.url("/echo"))
    assert status == 429 and json.loads(body)["error"] == "quota_exceeded"
    assert 0 < int(headers["retry-after"]) <= 86400


def test_limits_are_exact_across_loops(gate, upstream):
    """Two connections land on both loops; together they still get the key's burst only."""
    k = gate.create_key("--rate", "1/m", "--burst", "10")
    gate.start()
    import threading
    results = []
    threads = [threading.Thread(target=lambda: results.extend(a[0] for a in burst(gate, k["key"], 20))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(200) == 10
