"""End to end: a real keygate between curl (or a raw socket) and a real upstream."""
import hashlib
import json
import os
import socket
import subprocess
import time

import pytest

from conftest import Gate, curl, raw_exchange, read_response, wait_port
from upstream import Upstream, pattern_bytes


def echo(gate, key, path="/echo", *args):
    status, headers, body, _ = curl("-H", f"x-api-key: {key}", *args, gate.url(path))
    return status, headers, (json.loads(body) if status == 200 and body.startswith(b"{") else body)


def test_allowed_request_carries_identity_and_no_credential(gate, upstream):
    k = gate.create_key()
    gate.start()
    status, headers, seen = echo(
        gate, k["key"], "/echo?q=1", "-H", "X-Keygate-Key-Id: forged", "-H", "x_keygate_owner: forged", "-H", "X-Forwarded-For: 6.6.6.6",
        "-H", "X-Request-Id: trace-123")
    assert status == 200
    names = {k.lower(): v for k, v in seen["headers"]}
    assert "x-api-key" not in names
    assert names["x-keygate-key-id"] == k["id"]
    assert names["x-keygate-key-name"] == "test key"
    assert names["x-keygate-owner"] == "alice"
    assert names["x-forwarded-for"] == "127.0.0.1"
    assert names["x-forwarded-proto"] == "http"
    assert names["x-request-id"] == "trace-123"
    assert headers["x-request-id"] == "trace-123"
    assert "x_keygate_owner" not in names and [v for n, v in seen["headers"] if n.lower() == "x-keygate-key-id"] == [k["id"]]
    assert seen["target"] == "/echo?q=1"
    # Look-alikes of the forwarding fields, spelled with `_`, never reach the app.
    status, _, seen = echo(gate, k["key"], "/echo", "-H", "X_Forwarded_For: 6.6.6.6", "-H", "x_real_ip: 6.6.6.6")
    assert status == 200 and "6.6.6.6" not in json.dumps(seen)


def test_http10_request_without_host_reaches_the_app_with_one(gate, upstream):
    k = gate.create_key()
    gate.start()
    out = raw_exchange(gate.port, f"GET /echo HTTP/1.0\r\nx-api-key: {k['key']}\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
    hosts = [v for n, v in upstream.requests[-1]["headers"] if n.lower() == "host"]
    assert hosts == [f"127.0.0.1:{upstream.port}"]


def test_bearer_credential_is_removed(gate, upstream):
    k = gate.create_key()
    gate.start()
    status, _, body, _ = curl("-H", f"Authorization: Bearer {k['key']}", gate.url("/echo"))
    assert status == 200
    names = [n.lower() for n, _ in json.loads(body)["headers"]]
    assert "authorization" not in names


def test_each_denial(gate, upstream):
    active = gate.create_key()
    revoked = gate.create_key()
    disabled = gate.create_key()
    expired = gate.create_key("--expires", "2020-01-01T00:00:00Z", "--not-before", "2019-01-01")
    pending = gate.create_key("--not-before", "2099-01-01")
    scoped = gate.create_key("--scope", "suppliers.read")
    fenced = gate.create_key("--allow-ip", "10.0.0.0/8")
    gate.cli("keys", "revoke", revoked["id"], "--reason", "leaked")
    gate.cli("keys", "disable", disabled["id"])
    gate.start()
    cases = [
        ([], 401, "missing_key"),
        (["-H", "x-api-key: " + active["key"][:-1] + ("A" if active["key"][-1] != "A" else "B")], 401, "malformed_key"),
        (["-H", "x-api-key: kg_AAAAAAAA_" + "x" * 32 + "000000"], 401, "malformed_key"),
        (["-H", "x-api-key: an-unknown-legacy-secret"], 401, "unknown_key"),
        (["-H", "x-api-key: " + revoked["key"]], 401, "revoked"),
        (["-H", "x-api-key: " + disabled["key"]], 401, "disabled"),
        (["-H", "x-api-key: " + expired["key"]], 401, "expired"),
        (["-H", "x-api-key: " + pending["key"]], 401, "not_yet_valid"),
        (["-H", "x-api-key: " + scoped["key"]], 403, "scope_denied"),
        (["-H", "x-api-key: " + fenced["key"]], 403, "ip_not_allowed"),
    ]
    for args, want_status, reason in cases:
        status, headers, body, _ = curl(*args, gate.url("/echo"))
        assert status == want_status, (reason, body)
        doc = json.loads(body)
        assert doc["error"] == reason
        assert doc["request_id"] == headers["x-request-id"]
        assert doc["message"]
        if want_status == 401:
            assert headers["www-authenticate"].startswith("Bearer")
    assert len(upstream.requests) == 0
    lines = gate.wait_usage(len(cases))
    assert sorted(l["reason"] for l in lines) == sorted(c[2] for c in cases)
    assert all(l["decision"] == "deny" for l in lines)


def test_public_route_needs_no_key(gate, upstream):
    gate.start()
    status, _, _, _ = curl(gate.url("/status/204"))
    assert status == 204


def test_usage_log_fields(gate, upstream):
    k = gate.create_key()
    gate.start()
    echo(gate, k["key"], "/echo?secret=1")
    lines = gate.wait_usage(1)
    e = lines[0]
    for field in ["ts", "request_id", "decision", "reason", "status", "key_id", "key_name", "owner", "client_ip", "country", "method", "path",
                  "bytes_in", "bytes_out", "duration_ms", "upstream_ms"]:
        assert field in e, field
    assert e["decision"] == "allow" and e["reason"] is None and e["status"] == 200
    assert e["key_id"] == k["id"] and e["owner"] == "alice" and e["client_ip"] == "127.0.0.1"
    assert e["path"] == "/echo"
    assert k["key"] not in json.dumps(e)
    assert e["bytes_out"] > 0 and e["duration_ms"] >= e["upstream_ms"] >= 0


def test_large_upload_and_chunked_upload_are_intact(gate, upstream, tmp_path):
    k = gate.create_key()
    gate.start()
    data = os.urandom(32 << 20)
    f = tmp_path / "upload.bin"
    f.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    status, _, seen = echo(gate, k["key"], "/echo", "--data-binary", f"@{f}")
    assert status == 200 and seen["body_bytes"] == len(data) and seen["body_sha256"] == want
    status, _, seen = echo(gate, k["key"], "/echo", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{f}")
    assert status == 200 and seen["body_bytes"] == len(data) and seen["body_sha256"] == want
    # The upstream received keygate's own chunked framing.
    assert any(n.lower() == "transfer-encoding" for n, _ in seen["headers"])


def test_expect_continue(gate, upstream, tmp_path):
    k = gate.create_key()
    gate.start()
    f = tmp_path / "b.bin"
    f.write_bytes(b"x" * 2000)
    r = subprocess.run(["curl", "-sv", "-H", f"x-api-key: {k['key']}", "-H", "Expect: 100-continue", "--data-binary", f"@{f}", gate.url("/echo")],
                       capture_output=True, timeout=30)
    assert b"HTTP/1.1 100 Continue" in r.stderr
    assert json.loads(r.stdout)["body_bytes"] == 2000


def test_download_20mib_intact_in_each_framing(gate, upstream):
    k = gate.create_key("--scope", "echo")
    gate.cli("keys", "update", k["id"], "--scope", "echo")
    k2 = gate.create_key()
    gate.start()
    want = hashlib.sha256(pattern_bytes(20 << 20)).hexdigest()
    for mode in ["", "?mode=chunked", "?mode=close"]:
        status, headers, body, rc = curl("-H", f"x-api-key: {k2['key']}", gate.url(f"/bytes/{20 << 20}{mode}"))
        assert rc == 0 and status == 200, mode
        assert hashlib.sha256(body).hexdigest() == want, mode


def test_head_204_304(gate, upstream):
    k = gate.create_key()
    gate.start()
    out = raw_exchange(gate.port, f"HEAD /bytes/1000 HTTP/1.1\r\nHost: x\r\nx-api-key: {k['key']}\r\nConnection: close\r\n\r\n".encode())
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 1000" in head and body == b""
    status, headers, body, _ = curl("-H", f"x-api-key: {k['key']}", gate.url("/status/304"))
    assert status == 304 and body == b""
    # Keep-alive survives body-less answers: three on one connection.
    s = socket.create_connection(("127.0.0.1", gate.port), timeout=5)
    for path in ["/status/204", "/status/304", "/echo"]:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nx-api-key: {k['key']}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 "), head
        if path == "/echo":
            n = int([l for l in head.decode().split("\r\n") if l.lower().startswith("content-length")][0].split(":")[1])
            got = b""
            while len(got) < n:
                got += s.recv(n - len(got))
    s.close()


def test_200_requests_on_one_connection_and_pipelining(gate, upstream):
    k = gate.create_key()
    gate.start()
    s = socket.create_connection(("127.0.0.1", gate.port), timeout=5)
    f = s.makefile("rb")
    for i in range(200):
        s.sendall(f"GET /echo?i={i} HTTP/1.1\r\nHost: x\r\nx-api-key: {k['key']}\r\n\r\n".encode())
        status, _, body = read_response(f)
        assert status == 200, status
        assert json.loads(body)["target"] == f"/echo?i={i}"
    # Pipelining: three requests in one write, answers in order.
    s.sendall(b"".join(f"GET /echo?p={i} HTTP/1.1\r\nHost: x\r\nx-api-key: {k['key']}\r\n\r\n".encode() for i in range(3)))
    for i in range(3):
        status, _, body = read_response(f)
        assert status == 200
        assert json.loads(body)["target"] == f"/echo?p={i}"
    s.close()
    assert len(gate.wait_usage(203)) == 203
    # The upstream connections were pooled, not one per request.
    assert upstream.connections <= 4


def test_request_ids_and_heads_stay_whole_across_reused_buffers(gate, upstream):
    """A loop builds each request's id and upstream head in buffers that earlier requests gave
    back: ids must stay unique and match what the app saw, and nothing of a longer earlier head
    may show in a shorter later one, whatever mix of sizes, refusals, client ids and pipelining."""
    k = gate.create_key()
    gate.start()
    s = socket.create_connection(("127.0.0.1", gate.port), timeout=5)
    f = s.makefile("rb")
    sent = []  # (kind, client id or None, pad length)
    for i in range(90):
        kind = ["ok", "ok", "refused", "client-id"][i % 4]
        pad = [3000, 10, 700, 0, 1500][i % 5]
        client_id = f"trace-{i}-" + "z" * (i % 50) if kind == "client-id" else None
        sent.append((kind, client_id, pad))
    own_ids = set()
    i = 0
    while i < len(sent):
        batch = sent[i:i + (3 if i % 9 == 0 else 1)]  # some requests pipelined, most one at a time
        data = b""
        for j, (kind, client_id, pad) in enumerate(batch, start=i):
            key = k["key"] if kind != "refused" else "kg_AAAAAAAA_" + "B" * 32 + "CCCCCC"
            extra = (f"X-Request-Id: {client_id}\r\n" if client_id else "") + (f"X-Pad: {'p' * pad}\r\n" if pad else "")
            data += f"GET /echo?n={j} HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n{extra}\r\n".encode()
        s.sendall(data)
        for j, (kind, client_id, pad) in enumerate(batch, start=i):
            status, headers, body = read_response(f)
            rid = headers["x-request-id"]
            if kind == "refused":
                assert status == 401 and json.loads(body)["request_id"] == rid
            else:
                assert status == 200, body
                seen = {name.lower(): value for name, value in json.loads(body)["headers"]}
                assert seen["x-request-id"] == rid
                assert seen.get("x-pad", "") == "p" * pad
                assert json.loads(body)["target"] == f"/echo?n={j}"
            if client_id:
                assert rid == client_id
            else:
                assert rid not in own_ids
                own_ids.add(rid)
        i += len(batch)
    s.close()
    lines = gate.wait_usage(len(sent))
    assert len(lines) == len(sent)
    assert own_ids <= {l["request_id"] for l in lines}


@pytest.mark.parametrize(
    "name,raw,status",
    [
        ("CL.TE", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("TE obfuscated", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501),
        ("two CL", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
        ("bare LF", b"GET /echo HTTP/1.1\nHost: x\n\n", 400),
        ("obs-fold", b"GET /echo HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400),
        ("space before colon", b"GET /echo HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        ("no host", b"GET /echo HTTP/1.1\r\n\r\n", 400),
        ("huge header", b"GET /echo HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 40000 + b"\r\n\r\n", 431),
        ("HTTP/2.0", b"GET /echo HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        ("CONNECT", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405),
        ("bad chunk", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ],
)
def test_malformed_requests_rejected_and_closed(gate, upstream, name, raw, status):
    k = gate.create_key()
    gate.start()
    raw = raw.replace(b"Host: x\r\n", b"Host: x\r\nx-api-key: " + k["key"].encode() + b"\r\n", 1)
    out = raw_exchange(gate.port, raw)
    assert out.startswith(b"HTTP/1.1 %d " % status), (name, out[:200])
    assert b"Connection: close" in out
    body = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert body["error"] == "bad_request"
    if name != "bad chunk":
        assert upstream.requests == []


def test_denied_request_with_body_closes(gate, upstream):
    gate.start()
    out = raw_exchange(gate.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 401")
    assert out.count(b"HTTP/1.1") == 1
    assert b"Connection: close" in out


def test_upstream_unavailable_and_timeout(tmp_path):
    dead = Upstream()
    port = dead.port
    dead.stop()
    g = Gate(str(tmp_path), port, extra="timeouts: { upstream_response: 1s }\n")
    k = g.create_key()
    g.start()
    try:
        t = time.time()
        status, _, body, _ = curl("-H", f"x-api-key: {k['key']}", g.url("/echo"))
        assert status == 502 and json.loads(body)["error"] == "upstream_unavailable"
        assert time.time() - t < 1.5
        # Upstream comes back: the next request works.
        back = Upstream(port)
        try:
            status, _, _, _ = curl("-H", f"x-api-key: {k['key']}", g.url("/echo"))
            assert status == 200
            status, _, body, _ = curl("-H", f"x-api-key: {k['key']}", g.url("/slow/3000"))
            assert status == 504 and json.loads(body)["error"] == "upstream_timeout"
        finally:
            back.stop()
        # Loops hand over their batches independently: order across loops is not kept.
        reasons = sorted(str(l["reason"]) for l in g.wait_usage(3))
        assert reasons == ["None", "upstream_timeout", "upstream_unavailable"]
    finally:
        g.stop()


def test_upstream_dying_mid_response_is_not_passed_off_as_complete(gate, upstream):
    k = gate.create_key()
    gate.start()
    status, _, body, rc = curl("-H", f"x-api-key: {k['key']}", gate.url("/die"))
    assert rc != 0  # curl reports the transfer cut short
    assert len(body) < 1000


def test_stale_pooled_connection_is_replaced(gate, upstream):
    k = gate.create_key()
    gate.start()
    # /close makes the upstream close after answering; the next request must not fail.
    for _ in range(5):
        status, _, _, _ = curl("-H", f"x-api-key: {k['key']}", gate.url("/close"))
        assert status == 200
        status, _, _, _ = curl("-H", f"x-api-key: {k['key']}", gate.url("/echo"))
        assert status == 200


def test_revoke_reaches_running_gate_within_a_second(gate, upstream):
    k = gate.create_key()
    gate.start()
    assert curl("-H", f"x-api-key: {k['key']}", gate.url("/echo"))[0] == 200
    gate.cli("keys", "revoke", k["id"])
    t = time.time()
    while time.time() - t < 3:
        if curl("-H", f"x-api-key: {k['key']}", gate.url("/echo"))[0] == 401:
            break
        time.sleep(0.05)
    assert time.time() - t < 1.0


def test_bad_key_store_while_running_keeps_last_good(gate, upstream):
    k = gate.create_key()
    gate.start()
    with open(os.path.join(gate.dir, "keys.jsonl"), "a") as f:
        f.write("{not json\n")
    time.sleep(1.0)
    assert curl("-H", f"x-api-key: {k['key']}", gate.url("/echo"))[0] == 200
    assert "keys.jsonl:2:" in open(gate.stderr_path).read()


def test_bad_policy_and_store_refuse_to_start(tmp_path):
    g = Gate(str(tmp_path), 9, extra="limits: { max_headerz: 5 }\n")
    r = g.cli("serve", check=False)
    assert r.returncode == 1
    assert r.stderr.endswith("keygate.yaml:11: unknown field \"limits.max_headerz\"\n"), r.stderr
    os.makedirs(tmp_path / "b")
    g2 = Gate(str(tmp_path / "b"), 9)
    with open(os.path.join(g2.dir, "keys.jsonl"), "w") as f:
        f.write('{"id":"x"}\n')
    for command in ["check", "serve"]:
        r = g2.cli(command, check=False)
        assert r.returncode == 1 and "keys.jsonl:1: missing field" in r.stderr, r.stderr


def test_sigterm_drains(gate, upstream):
    k = gate.create_key()
    gate.start()
    p = subprocess.Popen(["curl", "-s", "-H", f"x-api-key: {k['key']}", gate.url("/slow/800")], stdout=subprocess.PIPE)
    time.sleep(0.3)
    gate.proc.send_signal(15)
    out, _ = p.communicate(timeout=10)
    assert json.loads(out)["target"] == "/slow/800"
    assert gate.proc.wait(timeout=10) == 0
    assert len(gate.usage_lines()) == 1
