"""Slow clients must not hold the app: body deadlines, request buffering, slow readers."""
import hashlib
import json
import socket
import threading
import time
import urllib.request

from conftest import Gate, curl, metric




def trickle(gate, key, length, interval, stop_after):
    """Sends a head promising `length` bytes, then one byte per `interval` s; returns what the
    gate answered and when the connection closed (seconds after the head)."""
    s = socket.create_connection(("127.0.0.1", gate.port), timeout=stop_after + 5)
    s.sendall(f"POST /echo HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nContent-Length: {length}\r\n\r\n".encode())
    start = time.time()
    answer = b""
    s.settimeout(interval)
    while time.time() - start < stop_after:
        try:
            s.sendall(b"x")
        except OSError:
            break
        try:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        except socket.timeout:
            continue
        except OSError:
            break
    closed = time.time() - start
    s.close()
    return answer, closed


def test_trickled_body_hits_body_total_and_never_reaches_the_upstream(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, extra="timeouts: { body_total: 2s }\nlimits: { min_body_rate: 0 }\n")
    k = g.create_key()
    g.start()
    try:
        answer, closed = trickle(g, k["key"], 8000, 0.2, 8)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert 1.8 < closed < 4.0
        assert upstream.requests == [], "a buffered body reached the upstream"
        event = g.wait_usage(1)[-1]
        assert event["status"] == 408 and event["reason"] == "bad_request" and event["decision"] == "deny"
        assert metric(g, 'keygate_timeouts_total{kind="body_total"}') == 1
        assert metric(g, "keygate_request_buffer_bytes") == 0
    finally:
        g.stop()


def test_body_under_the_minimum_rate_is_closed_after_the_grace(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, extra="limits: { min_body_rate: 1000 }\n")
    k = g.create_key()
    g.start()
    try:
        answer, closed = trickle(g, k["key"], 60000, 0.1, 12)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert 4.8 < closed < 7.0
        assert metric(g, 'keygate_timeouts_total{kind="body_rate"}') == 1
        assert upstream.requests == []
    finally:
        g.stop()


def test_large_body_streams_and_small_body_is_buffered_intact(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, extra="limits: { request_buffer: 65536 }\n")
    k = g.create_key()
    g.start()
    try:
        for size in (1000, 65536, 65537, 3 << 20):
            body = bytes((i * 7) % 256 for i in range(size))
            path = tmp_path / f"body{size}"
            path.write_bytes(body)
            status, _, out, _ = curl("-H", f"x-api-key: {k['key']}", "--data-binary", f"@{path}", g.url("/echo"))
            assert status == 200, size
            seen = json.loads(out)
            assert seen["body_sha256"] == hashlib.sha256(body).hexdigest(), size
            # Chunked bodies too: buffered while they fit, streamed once they outgrow it.
            status, _, out, _ = curl("-H", f"x-api-key: {k['key']}", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{path}",
                                     g.url("/echo"))
            assert status == 200 and json.loads(out)["body_sha256"] == hashlib.sha256(body).hexdigest(), size
        assert metric(g, "keygate_request_buffer_bytes") == 0
    finally:
        g.stop()


def test_slow_reader_is_closed_after_send_timeout(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, extra="timeouts: { send: 1s }\n")
    k = g.create_key()
    g.start()
    try:
        s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET /bytes/{20 << 20} HTTP/1.1\r\nHost: x\r\nx-api-key: {k['key']}\r\n\r\n".encode())
        time.sleep(3.0)  # read nothing
        got = 0
        s.settimeout(5)
        t = time.time()
        try:
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
        except OSError:
            pass
        assert got < 20 << 20, "the slow reader was not cut off"
        assert time.time() - t < 5, "what the kernel held for the slow reader was not discarded"
        assert metric(g, 'keygate_timeouts_total{kind="send"}') == 1
        event = g.wait_usage(1)[-1]
        assert event["status"] == 200
        assert metric(g, "keygate_upstream_connections_open") == 0
    finally:
        g.stop()


def test_small_answer_to_a_slow_reader_frees_the_upstream_at_once(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, workers=1)  # one loop, one pool
    k = g.create_key()
    g.start()
    try:
        s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET /bytes/200000 HTTP/1.1\r\nHost: x\r\nx-api-key: {k['key']}\r\n\r\n".encode())
        time.sleep(0.5)  # the client reads nothing yet
        assert metric(g, "keygate_connections_open") == 1
        for _ in range(3):
            assert curl("-H", f"x-api-key: {k['key']}", g.url("/echo"))[0] == 200
        # The other requests reused the slow reader's upstream connection: it was back in the
        # pool as soon as the upstream had answered, not when the slow client had read it all.
        assert metric(g, "keygate_upstream_connections_open") == 1
        s.close()
    finally:
        g.stop()


def test_normal_clients_are_unharmed_beside_slow_ones(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, extra="timeouts: { body_total: 3s }\n")
    k = g.create_key()
    g.start()
    try:
        threads = [threading.Thread(target=trickle, args=(g, k["key"], 8000, 0.5, 5)) for _ in range(50)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        held = metric(g, "keygate_upstream_connections_open")
        worst = 0
        for _ in range(40):
            t = time.time()
            assert curl("-H", f"x-api-key: {k['key']}", g.url("/echo"))[0] == 200
            worst = max(worst, time.time() - t)
        for t in threads:
            t.join()
        assert worst < 1.0
        assert held <= 1, "slow bodies held upstream connections"
        assert len(upstream.requests) == 40
    finally:
        g.stop()


def test_streamed_trickle_closes_its_upstream_connection_too(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, extra="timeouts: { body_total: 2s }\nlimits: { request_buffer: 0, min_body_rate: 0 }\n")
    k = g.create_key()
    g.start()
    try:
        result = {}
        t = threading.Thread(target=lambda: result.update(zip(("answer", "closed"), trickle(g, k["key"], 8000, 0.2, 8))))
        t.start()
        time.sleep(1.0)
        # Unbuffered, the head went upstream at once and the connection carries the trickle...
        assert metric(g, "keygate_upstream_connections_in_use") == 1
        t.join()
        assert result["answer"].startswith(b"HTTP/1.1 408") and 1.8 < result["closed"] < 4.0
        # ...and the half-sent request's connection is closed, never pooled.
        time.sleep(0.3)
        assert metric(g, "keygate_upstream_connections_open") == 0
        assert curl("-H", f"x-api-key: {k['key']}", g.url("/echo"))[0] == 200
    finally:
        g.stop()
