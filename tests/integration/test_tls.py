"""TLS on the gate: certificates made here with the openssl CLI, a real gate, curl and
openssl s_client as clients."""
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request

import pytest

from conftest import Gate, assert_closed_for_its_key, curl, rss_kib, ws_open

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def make_cert(folder, name, names, kind="ec", days=30):
    key, cert = os.path.join(folder, f"{name}.key"), os.path.join(folder, f"{name}.pem")
    algo = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ec" else ["-newkey", "rsa:2048"]
    san = ",".join(f"DNS:{n}" for n in names)
    subprocess.run(["openssl", "req", "-x509", *algo, "-nodes", "-keyout", key, "-out", cert, "-days", str(days), "-subj", f"/CN={names[0]}",
                    "-addext", f"subjectAltName={san}"], check=True, capture_output=True)
    return cert, key


def serial(pem):
    return subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", pem], capture_output=True, text=True).stdout.strip()


def served_serial(port, host):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname=host) as t:
            der = t.getpeercert(binary_form=True)
    pem = ssl.DER_cert_to_PEM_cert(der)
    return subprocess.run(["openssl", "x509", "-noout", "-serial"], input=pem, capture_output=True, text=True).stdout.strip()


def metric(gate, prefix):
    text = urllib.request.urlopen(f"http://127.0.0.1:{gate.admin_port}/metrics", timeout=5).read().decode()
    return {l.rsplit(" ", 1)[0]: float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(prefix)}


def tls_gate(tmp_path, upstream, extra=""):
    folder = str(tmp_path)
    make_cert(folder, "api", ["api.test", "*.api.test"], "ec")
    make_cert(folder, "other", ["other.test"], "rsa")
    with open(os.path.join(folder, "ca.pem"), "w") as f:
        f.write(open(os.path.join(folder, "api.pem")).read() + open(os.path.join(folder, "other.pem")).read())
    g = Gate(folder, upstream.port, extra="tls:\n  certificates:\n    - { cert: api.pem, key: api.key }\n    - { cert: other.pem, key: other.key }\n" + extra)
    return g


def test_a_certificate_name_cannot_break_the_metrics(tmp_path, upstream):
    # A common name (no DNS names) with a quote and a backslash: the label is escaped as the
    # Prometheus text format says, and the rest of the exposition still reads.
    folder = str(tmp_path)
    key, cert = os.path.join(folder, "odd.key"), os.path.join(folder, "odd.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "3", "-subj", '/CN=odd"na\\\\me'], check=True, capture_output=True)
    g = Gate(folder, upstream.port, extra="tls:\n  certificates:\n    - { cert: odd.pem, key: odd.key }\n")
    try:
        g.start()
        text = urllib.request.urlopen(f"http://127.0.0.1:{g.admin_port}/metrics", timeout=5).read().decode()
        line = [l for l in text.splitlines() if l.startswith("keygate_tls_certificate_expiry_timestamp_seconds{")]
        assert line == [line[0]] and line[0].startswith('keygate_tls_certificate_expiry_timestamp_seconds{name="odd\\"na\\\\me"} '), line
        assert float(line[0].rsplit(" ", 1)[1]) > time.time()
        assert all(l.startswith("#") or " " in l for l in text.splitlines())
    finally:
        g.stop()


def https(g, host, path, *args):
    return curl("--cacert", os.path.join(g.dir, "ca.pem"), "--resolve", f"{host}:{g.port}:127.0.0.1", *args, f"https://{host}:{g.port}{path}")


def test_sni_ecdsa_and_rsa_identity_and_usage(tmp_path, upstream):
    g = tls_gate(tmp_path, upstream)
    try:
        k = g.create_key()
        g.start()
        for host in ("api.test", "x.api.test", "other.test"):
            status, _, body, rc = https(g, host, "/echo", "-H", f"x-api-key: {k['key']}")
            assert rc == 0 and status == 200, host
            seen = {n.lower(): v for n, v in json.loads(body)["headers"]}
            assert seen["x-forwarded-proto"] == "https"
        assert served_serial(g.port, "other.test") == serial(os.path.join(g.dir, "other.pem"))
        assert served_serial(g.port, "unknown.test") == serial(os.path.join(g.dir, "api.pem"))  # the default
        event = g.wait_usage(3)[-1]
        assert event["tls"] in ("1.2", "1.3")
        m = metric(g, "keygate_tls_")
        assert m['keygate_tls_handshakes_total{result="ok"}'] >= 5
        assert m['keygate_tls_certificate_expiry_timestamp_seconds{name="api.test"}'] > time.time()
        # TLS 1.2 works by default, and its sessions resume.
        sess = os.path.join(g.dir, "sess")
        first = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{g.port}", "-tls1_2", "-sess_out", sess],
                               input="", capture_output=True, text=True, timeout=10)
        again = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{g.port}", "-tls1_2", "-sess_in", sess],
                               input="", capture_output=True, text=True, timeout=10)
        assert "New, TLSv1.2" in first.stdout and "Reused, TLSv1.2" in again.stdout
    finally:
        g.stop()


def test_min_version_13_refuses_12(tmp_path, upstream):
    g = tls_gate(tmp_path, upstream, extra='  min_version: "1.3"\n')
    try:
        g.start()
        _, _, _, rc = https(g, "api.test", "/echo", "--tls-max", "1.2")
        assert rc != 0
        status, _, _, rc = https(g, "api.test", "/echo")
        assert rc == 0 and status == 401
        assert metric(g, "keygate_tls_handshakes_total")['keygate_tls_handshakes_total{result="failed"}'] >= 1
    finally:
        g.stop()


def test_plain_http_garbage_and_stalled_handshakes_never_hurt(tmp_path, upstream):
    g = tls_gate(tmp_path, upstream, extra="timeouts: { header_read: 1s }\n")
    try:
        k = g.create_key()
        g.start()
        s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096)[:1] in (b"", b"\x15")  # closed, perhaps after an alert
        s.close()
        s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        s.sendall(os.urandom(3000))
        s.close()
        stalled = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        half = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
        t = time.time()
        assert stalled.recv(10) == b"" and time.time() - t < 3  # the header timeout covers the handshake
        half.close()
        status, _, _, rc = https(g, "api.test", "/echo", "-H", f"x-api-key: {k['key']}")
        assert rc == 0 and status == 200
        assert g.proc.poll() is None
    finally:
        g.stop()


def test_certificate_hot_reload_symlink_swap_and_bad_replacements(tmp_path, upstream):
    folder = str(tmp_path)
    # Kubernetes-style: tls/api.pem → ..data/api.pem, ..data → a dated folder swapped atomically.
    tls = os.path.join(folder, "tls")
    v1, v2 = os.path.join(tls, "v1"), os.path.join(tls, "v2")
    os.makedirs(v1)
    os.makedirs(v2)
    make_cert(v1, "api", ["api.test"])
    make_cert(v2, "api", ["api.test"])
    os.symlink("v1", os.path.join(tls, "..data"))
    for n in ("api.pem", "api.key"):
        os.symlink(os.path.join("..data", n), os.path.join(tls, n))
    g = Gate(folder, upstream.port, extra="tls:\n  certificates:\n    - { cert: tls/api.pem, key: tls/api.key }\n")
    try:
        g.start()
        assert served_serial(g.port, "api.test") == serial(os.path.join(v1, "api.pem"))
        # An open connection keeps its session across the swap.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        open_conn = ctx.wrap_socket(socket.create_connection(("127.0.0.1", g.port), timeout=5), server_hostname="api.test")
        tmp_link = os.path.join(tls, "..data_tmp")
        os.symlink("v2", tmp_link)
        os.rename(tmp_link, os.path.join(tls, "..data"))
        deadline = time.time() + 3
        while time.time() < deadline and served_serial(g.port, "api.test") != serial(os.path.join(v2, "api.pem")):
            time.sleep(0.1)
        assert served_serial(g.port, "api.test") == serial(os.path.join(v2, "api.pem"))
        assert time.time() - (deadline - 3) < 2.0
        open_conn.sendall(b"GET /echo HTTP/1.1\r\nHost: api.test\r\n\r\n")
        assert open_conn.recv(100).startswith(b"HTTP/1.1 401")
        open_conn.close()
        good = serial(os.path.join(v2, "api.pem"))
        # Garbage, a key that does not match, and an expired certificate: each kept out.
        make_cert(v1, "other", ["api.test"])
        expired = os.path.join(tls, "v3")
        os.makedirs(expired)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                        os.path.join(expired, "api.key"), "-out", os.path.join(expired, "api.pem"), "-days", "1", "-subj", "/CN=api.test",
                        "-not_after", "20200101000000Z"], capture_output=True)
        for broken in ("garbage", "mismatch", "expired"):
            v = os.path.join(tls, broken + "-dir")
            os.makedirs(v)
            if broken == "garbage":
                open(os.path.join(v, "api.pem"), "w").write("not a certificate\n")
                shutil.copy(os.path.join(v2, "api.key"), os.path.join(v, "api.key"))
            elif broken == "mismatch":
                shutil.copy(os.path.join(v2, "api.pem"), os.path.join(v, "api.pem"))
                shutil.copy(os.path.join(v1, "other.key"), os.path.join(v, "api.key"))
            else:
                if not os.path.exists(os.path.join(expired, "api.pem")):
                    continue  # this openssl cannot backdate; the other two still run
                shutil.copy(os.path.join(expired, "api.pem"), os.path.join(v, "api.pem"))
                shutil.copy(os.path.join(expired, "api.key"), os.path.join(v, "api.key"))
            os.symlink(broken + "-dir", tmp_link)
            os.rename(tmp_link, os.path.join(tls, "..data"))
            time.sleep(1.5)
            assert served_serial(g.port, "api.test") == good, broken
        assert metric(g, "keygate_tls_reloads_total")['keygate_tls_reloads_total{result="failed"}'] >= 2
        assert "keeping the certificates in use" in open(g.stderr_path).read()
        # SIGHUP re-reads them too: back to a good pair.
        os.symlink("v1", tmp_link)
        os.rename(tmp_link, os.path.join(tls, "..data"))
        g.proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        assert served_serial(g.port, "api.test") == serial(os.path.join(v1, "api.pem"))
    finally:
        g.stop()


def test_bad_tls_policy_refuses_to_start(tmp_path, upstream):
    folder = str(tmp_path)
    make_cert(folder, "a", ["a.test"])
    make_cert(folder, "b", ["b.test"])
    g = Gate(folder, upstream.port, extra="tls:\n  certificates:\n    - { cert: a.pem, key: b.key }\n")
    from conftest import KEYGATE
    for command in ("check", "serve"):
        r = subprocess.run([KEYGATE, command, "--config", g.config], capture_output=True, text=True, timeout=10)
        assert r.returncode == 1, command
        assert len(r.stderr.strip().splitlines()) == 1 and "tls:" in r.stderr, r.stderr
    with open(g.config, "a") as f:
        f.write("upstream_tls: {}\n")
    r = subprocess.run([KEYGATE, "check", "--config", g.config], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "keygate.yaml:" in r.stderr


def make_ca(folder, name):
    key, cert = os.path.join(folder, f"{name}.key"), os.path.join(folder, f"{name}.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "30", "-subj", f"/CN={name}"], check=True, capture_output=True)
    return cert, key


def make_client(folder, name, ca):
    key, csr, cert = (os.path.join(folder, f"{name}.{x}") for x in ("key", "csr", "pem"))
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
                    "-subj", f"/CN={name}"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-out", cert, "-days", "30"],
                   check=True, capture_output=True)
    return cert, key


@pytest.mark.parametrize("mode", ["require", "optional"])
def test_client_certificates_as_credentials(tmp_path, upstream, mode):
    folder = str(tmp_path)
    ca = make_ca(folder, "clients-ca")
    rogue = make_ca(folder, "rogue-ca")
    bound = make_client(folder, "erp", ca)
    unbound = make_client(folder, "partner", ca)
    untrusted = make_client(folder, "mallory", rogue)
    g = tls_gate(tmp_path, upstream, extra=f"  client_certificates: {{ ca: clients-ca.pem, mode: {mode} }}\n")
    try:
        k = g.create_key("--client-cert", bound[0])
        rec = json.loads(g.cli("keys", "show", k["id"], "--json").stdout)
        fp = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", bound[0]], capture_output=True, text=True).stdout
        assert rec["client_certs"] == ["sha256:" + fp.split("=")[1].strip().replace(":", "").lower()]
        g.start()

        def call(cert=None, *args):
            extra = ["--cert", cert[0], "--key", cert[1]] if cert else []
            return https(g, "api.test", "/echo", *extra, *args)

        status, _, body, rc = call(bound)
        assert rc == 0 and status == 200
        assert {n.lower(): v for n, v in json.loads(body)["headers"]}["x-keygate-key-id"] == k["id"]
        status, _, _, rc = call(unbound)
        assert rc == 0 and status == 401  # verified, but bound to no key
        status, _, _, rc = call(untrusted)
        if mode == "require":
            assert rc != 0  # the handshake fails
            _, _, _, rc = call(None)
            assert rc != 0
        else:
            assert rc == 0 and status == 401  # ignored: it does not verify
            status, _, _, rc = call(None, "-H", f"x-api-key: {k['key']}")
            assert rc == 0 and status == 200
        # Revoking the key refuses its certificate within a second.
        g.cli("keys", "revoke", k["id"])
        t = time.time()
        while time.time() - t < 3 and call(bound)[0] != 401:
            time.sleep(0.05)
        assert call(bound)[0] == 401 and time.time() - t < 1.5
    finally:
        g.stop()


class TLSUpstream:
    """The test upstream behind TLS (Python's ssl), with a certificate for app.test."""

    def __init__(self, cert, key):
        from upstream import Upstream

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)

        class Wrapped(Upstream):
            def get_request(self):
                sock, addr = self.socket.accept()
                return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

            def handle_error(self, request, client_address):
                pass  # handshakes the gate refused, and the readiness probe's bare connects

        self.server = Wrapped()
        self.port = self.server.port

    def stop(self):
        self.server.stop()


def app_upstream(folder):
    """The test upstream behind TLS with a certificate for app.test signed by `app-ca.pem`."""
    ca = make_ca(folder, "app-ca")
    key, csr, cert = (os.path.join(folder, f"app.{x}") for x in ("key", "csr", "pem"))
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
                    "-subj", "/CN=app.test"], check=True, capture_output=True)
    ext = os.path.join(folder, "ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:app.test\n")
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-out", cert, "-days", "30",
                    "-extfile", ext], check=True, capture_output=True)
    return TLSUpstream(cert, key)


def over_https(g, port):
    """Points the gate's policy at its upstream with https://."""
    with open(g.config) as f:
        text = f.read().replace(f'upstream: "http://127.0.0.1:{port}"', f'upstream: "https://127.0.0.1:{port}"')
    with open(g.config, "w") as f:
        f.write(text)


def test_https_upstream_verified_pooled_and_refused_with_the_wrong_ca(tmp_path):
    folder = str(tmp_path)
    up = app_upstream(folder)
    make_ca(folder, "wrong-ca")
    try:
        for name, extra, expect in [
            ("right", "upstream_tls: { ca: app-ca.pem, server_name: app.test }\n", 200),
            ("wrong", "upstream_tls: { ca: wrong-ca.pem, server_name: app.test }\n", 502),
            ("other-name", "upstream_tls: { ca: app-ca.pem, server_name: other.test }\n", 502),
            ("unverified", "upstream_tls: { verify: false }\n", 200),
        ]:
            sub = os.path.join(folder, name)
            os.makedirs(sub)
            for f in ("app-ca.pem", "wrong-ca.pem"):
                shutil.copy(os.path.join(folder, f), sub)
            g = Gate(sub, up.port, extra=extra)
            over_https(g, up.port)
            try:
                k = g.create_key()
                g.start()
                for _ in range(5):
                    status, _, body, _ = curl("-H", f"x-api-key: {k['key']}", g.url("/echo"))
                    assert status == expect, (name, body[:200])
                if expect == 200:
                    seen = json.loads(body)
                    assert seen["target"] == "/echo"
                    # Keep-alive to the upstream: five requests, one TLS connection per loop at most.
                    assert metric(g, "keygate_upstream_connections_open")["keygate_upstream_connections_open"] <= 2
                else:
                    assert json.loads(body)["error"] == "upstream_unavailable"
                    assert "certificate verification failed" in open(g.stderr_path).read()
                if name == "unverified":
                    assert "upstream_tls.verify is false" in open(g.stderr_path).read()
            finally:
                g.stop()
    finally:
        up.stop()


def test_records_split_across_reads_and_large_bodies(tmp_path, upstream):
    g = tls_gate(tmp_path, upstream)
    try:
        k = g.create_key()
        g.start()
        # A client that dribbles every TLS byte in its own write: each record reaches the gate in
        # pieces, handshake included.
        ctx = ssl.create_default_context(cafile=os.path.join(g.dir, "ca.pem"))
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname="api.test")
        s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def dribble():
            data = outgoing.read()
            for i in range(0, len(data), 7):
                s.sendall(data[i:i + 7])
                time.sleep(0.001)

        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                dribble()
                incoming.write(s.recv(65536))
        dribble()
        obj.write(f"GET /bytes/300000 HTTP/1.1\r\nHost: api.test\r\nx-api-key: {k['key']}\r\n\r\n".encode())
        dribble()
        got = b""
        while b"\r\n\r\n" not in got or len(got.split(b"\r\n\r\n", 1)[1]) < 300000:
            try:
                got += obj.read(65536)
            except ssl.SSLWantReadError:
                chunk = s.recv(65536)
                assert chunk, "closed early"
                incoming.write(chunk)
        head, body = got.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200") and len(body) == 300000
        from upstream import pattern_bytes
        assert body == pattern_bytes(300000)
        s.close()
        # 20 MiB down and 5 MiB up through TLS, intact.
        import hashlib
        status, _, down, rc = https(g, "api.test", f"/bytes/{20 << 20}", "-H", f"x-api-key: {k['key']}")
        assert rc == 0 and status == 200 and down == pattern_bytes(20 << 20)
        up = os.urandom(5 << 20)
        path = os.path.join(g.dir, "up.bin")
        open(path, "wb").write(up)
        status, _, out, rc = https(g, "api.test", "/echo", "-H", f"x-api-key: {k['key']}", "--data-binary", f"@{path}")
        assert rc == 0 and json.loads(out)["body_sha256"] == hashlib.sha256(up).hexdigest()
    finally:
        g.stop()


@pytest.mark.parametrize("upstream_kind", ["http", "https"])
def test_websocket_over_tls_echoes_and_closes_on_revoke(tmp_path, upstream, upstream_kind):
    """wss:// to the gate, to a plain upstream and to an https one: the tunnel relays through
    TLS records both ways (a message larger than a record included), holds a flood back for a
    client that does not read, and a revoked key's tunnel still gets its 1008 close frame,
    inside TLS, within a second."""
    from upstream import ws_frame, ws_read_frame

    folder = str(tmp_path)
    up = None
    if upstream_kind == "https":
        up = upstream = app_upstream(folder)
    g = tls_gate(tmp_path, upstream, extra="upstream_tls: { ca: app-ca.pem, server_name: app.test }\n" if up else "")
    if up:
        over_https(g, up.port)
    ctx = ssl.create_default_context(cafile=os.path.join(folder, "ca.pem"))
    wrap = lambda s: ctx.wrap_socket(s, server_hostname="api.test")
    try:
        k = g.create_key()
        g.start()
        s, reader, status, _ = ws_open(g, "/ws", k["key"], wrap=wrap)
        assert status == 101
        s.sendall(ws_frame(0x1, b"over tls", mask=True))
        assert ws_read_frame(reader) == (0x1, b"over tls")
        big = os.urandom(100 * 1024)
        s.sendall(ws_frame(0x2, big, mask=True))
        assert ws_read_frame(reader) == (0x2, big)
        # Backpressure through TLS: a flood for a client that reads nothing for a while is held
        # back, not buffered whole in the gate.
        size = 24 << 20
        flood, flood_reader, status, _ = ws_open(g, f"/ws-flood?bytes={size}", k["key"], wrap=wrap)
        assert status == 101
        before = rss_kib(g.proc.pid)
        time.sleep(1.5)
        held = rss_kib(g.proc.pid) - before
        count = 0
        while True:
            opcode, data = ws_read_frame(flood_reader)
            if opcode == 0x1:
                break
            count += len(data)
        assert count == size and held < 16 << 10, (count, held)
        flood.close()
        g.cli("keys", "revoke", k["id"])
        t = time.time()
        assert_closed_for_its_key(s, reader)
        assert time.time() - t < 1.5
        s.close()
        tunnel = g.wait_usage_for("/ws")
        assert len(tunnel) == 1, tunnel
        e = tunnel[0]
        assert e["status"] == 101 and e["tls"] == "1.3" and e["key_id"] == k["id"]
        assert e["bytes_in"] > 100 * 1024 and e["bytes_out"] > 100 * 1024
    finally:
        g.stop()
        if up:
            up.stop()


def test_server_sent_events_over_tls_arrive_as_they_are_sent(tmp_path, upstream):
    """Each event leaves in its own TLS record as it arrives: the first is read long before the
    second is sent (the test upstream waits a second between them)."""
    from upstream import Reader

    g = tls_gate(tmp_path, upstream)
    ctx = ssl.create_default_context(cafile=os.path.join(str(tmp_path), "ca.pem"))
    try:
        k = g.create_key()
        g.start()
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", g.port), timeout=10), server_hostname="api.test")
        t = time.time()
        s.sendall(f"GET /sse HTTP/1.1\r\nHost: api.test\r\nx-api-key: {k['key']}\r\n\r\n".encode())
        reader = Reader(s)
        assert b"text/event-stream" in reader.until(b"\r\n\r\n")
        reader.until(b"data: 1\n\n")
        first = time.time() - t
        reader.until(b"data: 2\n\n")
        second = time.time() - t
        assert first < 0.5 and second >= 0.9, (first, second)
        s.close()
    finally:
        g.stop()
