"""WebSocket and streaming through the gate: the key checked at the upgrade and enforced for the
tunnel's life; a WebSocket upstream and client written for the tests (RFC 6455)."""
import json
import os
import re
import signal
import socket
import threading
import time
import urllib.request

from conftest import Gate, assert_closed_for_its_key, curl, metric, read_response, rss_kib, ws_open
from upstream import pattern_bytes, ws_frame, ws_read_frame


def test_echo_text_and_binary_and_the_usage_event(gate, upstream):
    k = gate.create_key()
    gate.start()
    s, reader, status, headers = ws_open(gate, "/ws", k["key"])
    assert status == 101 and headers["upgrade"].lower() == "websocket" and "sec-websocket-accept" in headers
    s.sendall(ws_frame(0x1, b"hello", mask=True))
    assert ws_read_frame(reader) == (0x1, b"hello")
    big = os.urandom(150 * 1024)
    s.sendall(ws_frame(0x2, big, mask=True))
    assert ws_read_frame(reader) == (0x2, big)
    assert metric(gate, "keygate_tunnels_open") == 1
    s.sendall(ws_frame(0x8, b"\x03\xe8", mask=True))
    assert ws_read_frame(reader)[0] == 0x8
    s.close()
    tunnel = gate.wait_usage_for("/ws")
    assert len(tunnel) == 1, tunnel  # one event per tunnel, at its close
    e = tunnel[0]
    assert e["status"] == 101 and e["key_id"] == k["id"] and e["decision"] == "allow"
    assert e["bytes_in"] > 150 * 1024 and e["bytes_out"] > 150 * 1024
    # The upstream saw the handshake with its Connection/Upgrade and without the key.
    seen = {n.lower(): v for n, v in upstream.requests[-1]["headers"]}
    assert seen["upgrade"] == "websocket" and seen["connection"].lower() == "upgrade" and "x-api-key" not in seen
    assert seen["x-keygate-key-id"] == k["id"]


def test_large_and_small_messages_mixed_both_ways(gate, upstream):
    # Large messages are spliced through a pipe and small ones read into the gate, each
    # direction switching as sizes change; sent back to back, every echo must come back whole
    # and in order, and the byte counts must cover the spliced bytes too.
    k = gate.create_key()
    gate.start()
    s, reader, status, _ = ws_open(gate, "/ws", k["key"])
    assert status == 101
    sizes = [100 << 10, 10, 40 << 10, 1, 300 << 10, 32 << 10, (32 << 10) - 1, 16 << 10, 0, 70 << 10, 3, 1 << 20, 125, 126, 65536]
    messages = [os.urandom(n) for n in sizes]
    sent = b"".join(ws_frame(0x2, m, mask=True) for m in messages)
    sender = threading.Thread(target=lambda: s.sendall(sent))
    sender.start()
    for m in messages:
        assert ws_read_frame(reader) == (0x2, m)
    sender.join(timeout=10)
    s.sendall(ws_frame(0x8, b"\x03\xe8", mask=True))
    assert ws_read_frame(reader)[0] == 0x8
    s.close()
    e = gate.wait_usage_for("/ws")
    # Every byte of the tunnel, the close frames (8 bytes masked, 4 echoed) included.
    echoed = sum(len(ws_frame(0x2, m)) for m in messages)
    assert len(e) == 1 and (e[0]["bytes_in"], e[0]["bytes_out"]) == (len(sent) + 8, echoed + 4), e


def test_a_gate_out_of_descriptors_relays_large_messages_through_its_buffer(tmp_path, upstream):
    # Splicing needs a pipe; a gate that cannot open one (its descriptor limit reached) must
    # still relay every byte, through its buffer.
    import resource

    g = Gate(str(tmp_path), upstream.port, workers=1)
    try:
        k = g.create_key()
        g.start()
        s, reader, status, _ = ws_open(g, "/ws", k["key"])
        assert status == 101
        s.sendall(ws_frame(0x1, b"small first", mask=True))
        assert ws_read_frame(reader) == (0x1, b"small first")

        def fds():
            return [os.readlink(f"/proc/{g.proc.pid}/fd/{n}") for n in os.listdir(f"/proc/{g.proc.pid}/fd")]

        numbers = [int(n) for n in os.listdir(f"/proc/{g.proc.pid}/fd")]
        free_below = max(numbers) + 1 - len(numbers)
        assert free_below < 2, f"the gate's descriptors have {free_below} gaps: a pipe could still open"
        resource.prlimit(g.proc.pid, resource.RLIMIT_NOFILE, (max(numbers) + 1, max(numbers) + 1))
        pipes = sum(1 for f in fds() if f.startswith("pipe:"))
        for n in (300 << 10, 17 << 10, 1 << 20):
            m = os.urandom(n)
            s.sendall(ws_frame(0x2, m, mask=True))
            assert ws_read_frame(reader) == (0x2, m)
        assert sum(1 for f in fds() if f.startswith("pipe:")) == pipes
        s.close()
    finally:
        g.stop()


def test_refused_before_any_upgrade(gate, upstream):
    k = gate.create_key("--scope", "suppliers.read")
    gate.start()
    for key, want in [(None, 401), ("kg_bad", 401), (k["key"], 403)]:
        s, reader, status, _ = ws_open(gate, "/ws", key)
        assert status == want
        s.close()
    assert [r for r in upstream.requests if r["target"] == "/ws"] == []


def test_refused_upgrade_keeps_http_and_checks_the_next_request(gate, upstream):
    k = gate.create_key()
    gate.start()
    s, reader, status, headers = ws_open(gate, "/ws-refuse", k["key"])
    assert status == 403
    reader.exactly(int(headers["content-length"]))
    # Same connection, no key: must be checked again, never tunnelled.
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: gate\r\n\r\n")
    head = reader.until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401")
    s.close()


def test_h2c_and_other_upgrades_are_not_forwarded(gate, upstream):
    k = gate.create_key()
    gate.start()
    status, _, body, _ = curl("-H", f"x-api-key: {k['key']}", "-H", "Connection: Upgrade, HTTP2-Settings", "-H", "Upgrade: h2c",
                              "-H", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA", gate.url("/echo"))
    assert status == 200
    seen = {n.lower() for n, _ in json.loads(body)["headers"]}
    assert "upgrade" not in seen and "http2-settings" not in seen and "connection" not in seen
    # A websocket upgrade on a POST or over HTTP/1.0 is no upgrade either.
    s, reader, status, _ = ws_open(gate, "/ws", k["key"], extra=["Upgrade: websocket"])
    assert status != 101
    s.close()


def test_revoke_closes_an_open_tunnel_within_a_second(gate, upstream):
    k = gate.create_key()
    gate.start()
    s, reader, status, _ = ws_open(gate, "/ws", k["key"])
    assert status == 101
    s.sendall(ws_frame(0x1, b"before", mask=True))
    assert ws_read_frame(reader) == (0x1, b"before")
    gate.cli("keys", "revoke", k["id"])
    t = time.time()
    assert_closed_for_its_key(s, reader)
    assert time.time() - t < 1.5
    s.close()


def test_revoke_in_a_stream_of_large_frames_closes_between_two_of_them(gate, upstream):
    # Frames larger than the gate's pipe are spliced in pieces, past its view; the gate must
    # still know where each ends, so its 1008 close frame never cuts one in two.
    k = gate.create_key()
    gate.start()
    size = (300 << 10) + 7
    s, reader, status, _ = ws_open(gate, f"/ws-flood?bytes={size * 1000}&frame={size}&gap=0.01", k["key"])
    assert status == 101
    for _ in range(5):
        assert ws_read_frame(reader) == (0x2, pattern_bytes(size))
    gate.cli("keys", "revoke", k["id"])
    t = time.time()
    while True:
        opcode, payload = ws_read_frame(reader)
        if opcode == 0x8:
            break
        assert (opcode, len(payload)) == (0x2, size)
    assert payload[:2] == (1008).to_bytes(2, "big")
    assert time.time() - t < 1.5
    s.settimeout(3)
    assert s.recv(100) == b""
    s.close()


def wait_for_key_closure(gate, key_id, tunnels=1):
    # Each event loop tells of its own tunnels: the counts of every line add up.
    pattern = re.compile(rf"tunnels: closed (\d+) opened with key {re.escape(key_id)}")
    deadline = time.time() + 3
    while sum(int(n) for n in pattern.findall(open(gate.stderr_path).read())) < tunnels:
        assert time.time() < deadline, "the gate did not close the tunnel for its key"
        time.sleep(0.02)


def test_a_frame_under_way_at_revoke_is_finished_then_the_close_frame_follows(gate, upstream):
    # The key ends while the app is inside a frame: the client gets that frame whole, then the
    # 1008 close frame, and nothing the app sends after it. Both the read path (1,000 bytes)
    # and the splice path (300 KiB) are held at the same point.
    k = gate.create_key()
    gate.start()
    tunnels = []
    for size in (1000, 300 << 10):
        s, reader, status, _ = ws_open(gate, f"/ws-held?frame={size}", k["key"])
        assert status == 101
        assert ws_read_frame(reader) == (0x2, pattern_bytes(size))
        tunnels.append((size, s, reader))
    gate.cli("keys", "revoke", k["id"])
    wait_for_key_closure(gate, k["id"], tunnels=2)
    upstream.release.set()
    for size, s, reader in tunnels:
        assert ws_read_frame(reader) == (0x2, pattern_bytes(size)), size
        assert_closed_for_its_key(s, reader)
        s.close()
    assert metric(gate, 'keygate_tunnels_closed_total{cause="key"}') == 2


def test_a_frame_the_app_never_finishes_does_not_keep_a_revoked_tunnel_open(gate, upstream):
    # The close frame cannot cut the app's frame in two, and the app never sends the rest: the
    # tunnel closes without one, still within a second of the key's end.
    k = gate.create_key()
    gate.start()
    s, reader, status, _ = ws_open(gate, "/ws-held?frame=300000", k["key"])
    assert status == 101
    assert ws_read_frame(reader) == (0x2, pattern_bytes(300000))
    gate.cli("keys", "revoke", k["id"])
    wait_for_key_closure(gate, k["id"])
    t = time.time()
    s.settimeout(3)
    try:
        while True:
            reader.fill()
    except EOFError:
        pass
    assert time.time() - t < 1.0
    # Half of the held frame came through, and no close frame was stitched into it.
    whole = ws_frame(0x2, pattern_bytes(300000))
    assert reader.buf == whole[: len(whole) // 2]
    s.close()
    assert metric(gate, 'keygate_tunnels_closed_total{cause="key"}') == 1
    deadline = time.time() + 3
    while not gate.usage_lines() and time.time() < deadline:
        time.sleep(0.05)
    (event,) = gate.usage_lines()
    assert event["status"] == 101 and event["bytes_out"] >= len(whole) * 3 // 2


def test_disable_delete_and_expiry_close_open_tunnels_too(gate, upstream):
    disabled, deleted, kept = gate.create_key(), gate.create_key(), gate.create_key()
    # Five seconds (expiry is kept to the second): time to start the gate and open every
    # tunnel first, even on a busy machine.
    expiring = gate.create_key("--ttl", "5s")
    gate.start()
    tunnels = {}
    for name, k in (("disabled", disabled), ("deleted", deleted), ("expiring", expiring), ("kept", kept)):
        s, reader, status, _ = ws_open(gate, "/ws", k["key"])
        assert status == 101, name
        s.sendall(ws_frame(0x1, name.encode(), mask=True))
        assert ws_read_frame(reader) == (0x1, name.encode())
        tunnels[name] = (s, reader)

    def closed_within_a_second(name, since):
        assert_closed_for_its_key(*tunnels[name])
        assert time.time() - since < 1.5, f"{name}: closed after {time.time() - since:.2f} s"

    gate.cli("keys", "disable", disabled["id"])
    closed_within_a_second("disabled", time.time())
    gate.cli("keys", "delete", deleted["id"])
    closed_within_a_second("deleted", time.time())
    closed_within_a_second("expiring", max(gate.expires_at(expiring["id"]), time.time()))
    # The other key's tunnel is untouched.
    s, reader = tunnels["kept"]
    s.sendall(ws_frame(0x2, b"still here", mask=True))
    assert ws_read_frame(reader) == (0x2, b"still here")
    # Counted by cause, and told in the operational log once per key.
    assert metric(gate, 'keygate_tunnels_closed_total{cause="key"}') == 3
    log = open(gate.stderr_path).read()
    for k, why in ((disabled, "disabled"), (deleted, "deleted"), (expiring, "expired")):
        assert f"tunnels: closed 1 opened with key {k['id']} ({why})" in log, log
    for s, _ in tunnels.values():
        s.close()
    deadline = time.time() + 5
    while metric(gate, 'keygate_tunnels_closed_total{cause="client"}') < 1 and time.time() < deadline:
        time.sleep(0.05)
    assert metric(gate, 'keygate_tunnels_closed_total{cause="client"}') == 1


def test_tunnels_count_against_the_connection_caps(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, extra="limits: { max_connections_per_ip: 3 }\n")
    k = g.create_key()
    g.start()
    try:
        tunnels = []
        for i in range(3):
            s, reader, status, _ = ws_open(g, "/ws", k["key"])
            assert status == 101
            tunnels.append((s, reader))
        assert metric(g, "keygate_tunnels_open") == 3
        extra = socket.create_connection(("127.0.0.1", g.port), timeout=2)
        extra.sendall(f"GET /echo HTTP/1.1\r\nHost: x\r\nx-api-key: {k['key']}\r\n\r\n".encode())
        try:
            assert extra.recv(100) == b"", "a fourth connection was served beside three tunnels"
        except ConnectionResetError:
            pass
        extra.close()
        # The tunnels still carry messages; closing one frees its share.
        s, reader = tunnels.pop()
        s.sendall(ws_frame(0x1, b"hi", mask=True))
        assert ws_read_frame(reader) == (0x1, b"hi")
        s.close()
        deadline = time.time() + 3
        while metric(g, "keygate_tunnels_open") != 2 and time.time() < deadline:
            time.sleep(0.05)
        assert curl("-H", f"x-api-key: {k['key']}", g.url("/echo"))[0] == 200
        for s, _ in tunnels:
            s.close()
    finally:
        g.stop()


def test_query_key_is_stripped_and_never_logged(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, extra="credentials: { headers: [x-api-key], bearer: true, query: [api_key] }\n")
    try:
        k = g.create_key()
        g.start()
        assert "credentials.query" in open(g.stderr_path).read()
        s, reader, status, _ = ws_open(g, f"/ws?api_key={k['key']}&room=7")
        assert status == 101
        s.sendall(ws_frame(0x1, b"hi", mask=True))
        assert ws_read_frame(reader) == (0x1, b"hi")
        s.close()
        assert upstream.requests[-1]["target"] == "/ws?room=7"
        status, _, body, _ = curl(g.url(f"/echo?api_key={k['key']}"))
        assert status == 200 and json.loads(body)["target"] == "/echo"
        # The name is read decoded, as the app would read it.
        status, _, body, _ = curl(g.url(f"/echo?x=1&api%5Fkey={k['key']}"))
        assert status == 200 and json.loads(body)["target"] == "/echo?x=1"
        status, _, body, _ = curl(g.url(f"/echo?api_key={k['key']}&%61pi_key=kg_other_secret"))
        assert status == 401 and json.loads(body)["error"] == "malformed_key" and b"kg_other" not in body
        status, _, body, _ = curl(g.url("/echo?api_key=kg_wrong_secret&x=1"))
        assert status == 401 and b"kg_wrong" not in body
        time.sleep(0.5)
        g.stop()
        for name in os.listdir(tmp_path):
            if name.endswith((".jsonl", ".err", ".json")) and name != "keys.jsonl" and name != "keys.audit.jsonl":
                text = open(os.path.join(tmp_path, name), errors="replace").read()
                assert k["key"] not in text and "kg_wrong_secret" not in text and "kg_other_secret" not in text, name
    finally:
        g.stop()


def test_server_sent_events_arrive_as_they_are_sent(gate, upstream):
    k = gate.create_key()
    gate.start()
    s = socket.create_connection(("127.0.0.1", gate.port), timeout=10)
    t = time.time()
    s.sendall(f"GET /sse HTTP/1.1\r\nHost: gate\r\nx-api-key: {k['key']}\r\n\r\n".encode())
    got = b""
    while b"data: 1" not in got:
        got += s.recv(4096)
    first = time.time() - t
    while b"data: 2" not in got:
        got += s.recv(4096)
    second = time.time() - t
    s.close()
    assert first < 0.5, f"first event after {first:.3f}s"
    assert 0.9 < second < 2.0


def test_fifty_concurrent_tunnels(gate, upstream):
    k = gate.create_key()
    gate.start()
    errors = []

    def one(i):
        try:
            s, reader, status, _ = ws_open(gate, "/ws", k["key"])
            assert status == 101
            for j in range(20):
                msg = f"{i}-{j}".encode() * 10
                s.sendall(ws_frame(0x1, msg, mask=True))
                assert ws_read_frame(reader) == (0x1, msg)
            s.close()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    deadline = time.time() + 5
    while time.time() < deadline and metric(gate, "keygate_tunnels_open") != 0:
        time.sleep(0.05)
    assert metric(gate, "keygate_tunnels_open") == 0


def test_idle_tunnel_times_out_and_sigterm_closes_tunnels_after_the_grace(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, extra="timeouts: { tunnel_idle: 1s, shutdown_grace: 2s }\n")
    try:
        k = g.create_key()
        g.start()
        s, reader, status, _ = ws_open(g, "/ws", k["key"])
        assert status == 101
        t = time.time()
        s.settimeout(5)
        assert s.recv(100) == b"" and 0.8 < time.time() - t < 3  # idle for tunnel_idle: closed
        s.close()
        assert metric(g, 'keygate_tunnels_closed_total{cause="idle"}') == 1
        # A busy tunnel lives through SIGTERM until shutdown_grace, then is closed.
        s, reader, status, _ = ws_open(g, "/ws", k["key"])
        assert status == 101
        g.proc.send_signal(signal.SIGTERM)
        t = time.time()
        alive_until = t
        closed_with = None
        try:
            while time.time() - t < 5:
                s.sendall(ws_frame(0x1, b"ping", mask=True))
                opcode, payload = ws_read_frame(reader)
                if opcode == 0x8:
                    closed_with = int.from_bytes(payload[:2], "big")
                    break
                assert (opcode, payload) == (0x1, b"ping")
                alive_until = time.time()
                time.sleep(0.2)
        except (OSError, EOFError, ConnectionError):
            pass
        assert 1.5 < alive_until - t < 3.5
        assert closed_with == 1001  # "going away": the client may reconnect to another gate
        assert g.proc.wait(timeout=10) == 0
        tunnel = [e for e in g.usage_lines() if e["path"] == "/ws"]
        assert len(tunnel) == 2 and all(e["status"] == 101 for e in tunnel)
    finally:
        g.stop()


def test_backpressure_each_way_keeps_the_gate_small(gate, upstream):
    """A client that stops reading while the upstream floods it, and an upstream that stops
    reading while the client floods it: the gate holds a bounded buffer each way, the sender
    waits, and every byte arrives once the reader reads again."""
    import hashlib

    k = gate.create_key()
    gate.start()
    size = 48 << 20
    before = rss_kib(gate.proc.pid)

    # Upstream to client: the client reads nothing for two seconds.
    s, reader, status, _ = ws_open(gate, f"/ws-flood?bytes={size}", k["key"])
    assert status == 101
    time.sleep(2)
    held = rss_kib(gate.proc.pid) - before
    got = hashlib.sha256()
    count = 0
    while True:
        opcode, data = ws_read_frame(reader)
        if opcode == 0x1:
            assert data == b"done"
            break
        got.update(data)
        count += len(data)
    assert count == size and got.hexdigest() == hashlib.sha256(pattern_bytes(size)).hexdigest()
    assert held < 16 << 10, f"the gate grew by {held} KiB holding a flood for a client that did not read"
    s.close()

    # Client to upstream: the upstream reads nothing for two seconds while a thread sends.
    s, reader, status, _ = ws_open(gate, "/ws-sink?pause=2", k["key"])
    assert status == 101
    data = pattern_bytes(1 << 20)
    frame = ws_frame(0x2, data, mask=True)  # masked once: the client must outpace the gate
    sent = {"frames": 0}

    def flood():
        for _ in range(size >> 20):
            s.sendall(frame)
            sent["frames"] += 1

    t = threading.Thread(target=flood)
    t.start()
    time.sleep(1.5)
    # The socket buffers and the gate's one buffer hold a few MiB; the rest waits in the client.
    assert sent["frames"] < size >> 20, "the client sent everything while the upstream read nothing"
    held = rss_kib(gate.proc.pid) - before
    t.join(timeout=60)
    assert not t.is_alive()
    s.sendall(ws_frame(0x1, b"end", mask=True))
    opcode, answer = ws_read_frame(reader)
    expect = hashlib.sha256(data * (size >> 20)).hexdigest()
    assert (opcode, answer.decode()) == (0x1, f"{size} {expect}")
    assert held < 16 << 10, f"the gate grew by {held} KiB holding a flood for an upstream that did not read"
    s.close()


def test_what_the_app_sent_before_it_left_still_reaches_the_client(gate, upstream):
    # The app sends 8 MiB to a client that is not reading yet, then closes. Part of it waits in
    # the gate (spliced into a pipe or queued) when the app's end arrives: it must all reach the
    # client, then the gate closes.
    k = gate.create_key()
    gate.start()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", gate.port))
    s, reader, status, _ = ws_open(gate, f"/ws-flood?bytes={8 << 20}&close=1", k["key"], sock=s)
    assert status == 101
    time.sleep(1)
    got = bytearray()
    while True:
        opcode, data = ws_read_frame(reader)
        if opcode == 0x1:
            break
        got += data
    assert (data, bytes(got)) == (b"done", pattern_bytes(8 << 20))
    assert s.recv(100) == b""
    s.close()
    assert metric(gate, 'keygate_tunnels_closed_total{cause="upstream"}') == 1


def test_a_tunnel_client_that_stops_reading_is_cut_off_after_the_send_timeout(tmp_path, upstream):
    """A stalled reader holds a tunnel's upstream only for `timeouts.send`, as it would an answer."""
    g = Gate(str(tmp_path), upstream.port, extra="timeouts: { send: 2s }\n")
    try:
        k = g.create_key()
        g.start()
        s, reader, status, _ = ws_open(g, f"/ws-flood?bytes={64 << 20}", k["key"])
        assert status == 101
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        t = time.time()
        e = g.wait_usage_for("/ws-flood", timeout=10)
        cut = time.time() - t
        assert len(e) == 1 and e[0]["status"] == 101 and 0 < e[0]["bytes_out"] < 64 << 20, e
        assert 1.5 < cut < 6, cut
        assert metric(g, 'keygate_timeouts_total{kind="send"}') == 1
        assert metric(g, "keygate_tunnels_open") == 0
        assert metric(g, 'keygate_tunnels_closed_total{cause="send"}') == 1
        s.close()
    finally:
        g.stop()


def test_a_client_that_is_not_reading_gets_one_close_frame(gate, upstream):
    # The tunnel's key expires while frames for the client are still queued in the gate (the
    # client reads nothing): one 1008 close frame goes behind them, not one more on every check
    # until the client reads. The frames come 5 ms apart, so the gate stops reading the
    # upstream between two of them and its close frame may follow at once.
    k = gate.create_key("--ttl", "3s")
    gate.start()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", gate.port))
    s, reader, status, _ = ws_open(gate, "/ws-flood?bytes=64000000&gap=0.005", k["key"], sock=s)
    assert status == 101
    time.sleep(max(0, gate.expires_at(k["id"]) - time.time()) + 1.5)
    closes = []
    try:
        while True:
            opcode, payload = ws_read_frame(reader)
            if opcode == 0x8:
                closes.append(payload[:2])
    except EOFError:
        pass
    assert closes == [(1008).to_bytes(2, "big")]


def test_what_a_client_sent_before_it_left_still_reaches_the_app(gate, upstream):
    # Clients send 3.25-4.75 MiB into tunnels whose upstream is not reading yet, then close their
    # sockets. Past what the kernel's buffers hold, up to 256 KiB waits in the gate; for the
    # lengths where the client's end is read while some waits there, those bytes must still
    # reach the app before the tunnel to it is closed (they were dropped with the upstream
    # connection before).
    import hashlib

    k = gate.create_key()
    gate.start()
    data = pattern_bytes(16 << 10)
    sizes = list(range(208, 312, 8))  # in 16 KiB frames, 128 KiB apart
    opened = [ws_open(gate, "/ws-sink?pause=1.5", k["key"]) for _ in sizes]
    assert all(status == 101 for _, _, status, _ in opened)

    def send(s, frames):
        s.sendall(ws_frame(0x2, data, mask=True) * frames + ws_frame(0x1, b"end", mask=True))
        s.close()

    senders = [threading.Thread(target=send, args=(s, n)) for (s, _, _, _), n in zip(opened, sizes)]
    for t in senders:
        t.start()
    for t in senders:
        t.join(timeout=30)
    deadline = time.time() + 30
    while len(upstream.sinks) < len(sizes) and time.time() < deadline:
        time.sleep(0.05)
    received = {count // len(data): digest for count, digest in upstream.sinks}
    lost = [n for n in sizes if received.get(n) != hashlib.sha256(data * n).hexdigest()]
    assert lost == [], f"tunnels of {lost} frames lost bytes"
    assert metric(gate, 'keygate_tunnels_closed_total{cause="client"}') == len(sizes)


def loop_connections(gate):
    text = urllib.request.urlopen(f"http://127.0.0.1:{gate.admin_port}/metrics", timeout=5).read().decode()
    return [int(float(l.split()[1])) for l in text.splitlines() if l.startswith("keygate_loop_connections_open{")]


def test_new_connections_go_to_the_loop_with_the_fewest(gate, upstream):
    # A loop relaying a busy tunnel is the one the kernel wakes for the listener; new
    # connections must still spread over both loops, within two of each other.
    k = gate.create_key()
    gate.start()
    s, reader, status, _ = ws_open(gate, "/ws", k["key"])
    assert status == 101
    stop = threading.Event()

    def pump():
        # Bounded: the test ends it, or it stops by itself after 30 s.
        end = time.time() + 30
        while not stop.is_set() and time.time() < end:
            s.sendall(ws_frame(0x2, b"x" * 64, mask=True))
            ws_read_frame(reader)

    pumper = threading.Thread(target=pump)
    pumper.start()
    held = []
    try:
        time.sleep(0.2)
        for _ in range(24):
            c = socket.create_connection(("127.0.0.1", gate.port), timeout=5)
            c.sendall(f"GET /echo HTTP/1.1\r\nHost: x\r\nx-api-key: {k['key']}\r\n\r\n".encode())
            assert read_response(c.makefile("rb"))[0] == 200
            held.append(c)
        split = loop_connections(gate)
        assert len(split) == 2 and sum(split) == 25 and max(split) - min(split) <= 2, split
    finally:
        stop.set()
        pumper.join(timeout=10)
        for c in held:
            c.close()
        s.close()
