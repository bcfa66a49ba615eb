"""Trust at the edge: no credential reaches the app, no encoded path slips past a scope, and
no file, flag or log line written by someone else brings a process down."""
import json
import os
import signal
import subprocess
import time
import urllib.request

from conftest import KEYGATE, Gate, curl, raw_exchange


def echo(gate, path, *headers):
    args = []
    for h in headers:
        args += ["-H", h]
    status, _, body, _ = curl(*args, gate.url(path))
    return status, (json.loads(body) if status == 200 else body)


def header_names(seen):
    return {n.lower(): v for n, v in seen["headers"]}


def test_public_route_never_forwards_a_credential(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, public_routes='["GET /echo/public"]',
             extra="credentials: {headers: [x-api-key, x-partner-key], bearer: true}\n")
    try:
        k = g.create_key()
        g.start()
        # A wrong key, a second configured header and a bearer token: all removed, none refused.
        status, seen = echo(g, "/echo/public", "x-api-key: kg_not_a_real_key", "X-Partner-Key: partner-secret",
                            "Authorization: Bearer some-token", "X-Keygate-Key-Id: forged")
        assert status == 200
        names = header_names(seen)
        assert "x-api-key" not in names and "x-partner-key" not in names and "authorization" not in names
        assert "x-keygate-key-id" not in names
        assert "kg_not_a_real_key" not in json.dumps(seen) and "partner-secret" not in json.dumps(seen)
        # A valid key lends its identity; its secret still never reaches the app.
        status, seen = echo(g, "/echo/public", f"Authorization: Bearer {k['key']}")
        assert status == 200
        assert header_names(seen)["x-keygate-key-id"] == k["id"]
        assert k["key"] not in json.dumps(seen)
        # Spelled as some apps read them (`x_partner_key` is HTTP_X_PARTNER_KEY to a CGI-style
        # app; a tab after the scheme): still credentials, still removed.
        status, seen = echo(g, "/echo/public", "X_Partner_Key: partner-secret", "Authorization: Bearer\tsome-token")
        assert status == 200 and "partner-secret" not in json.dumps(seen) and "some-token" not in json.dumps(seen)
        status, seen = echo(g, "/echo/private", f"x_api_key: {k['key']}")
        assert status == 200 and header_names(seen)["x-keygate-key-id"] == k["id"] and k["key"] not in json.dumps(seen)
        # A keyed route still needs the key.
        assert echo(g, "/echo/private")[0] == 401
    finally:
        g.stop()


def test_encoded_slash_is_refused_and_normal_form_forwarded(gate, upstream):
    k = gate.create_key("--scope", "suppliers.read")
    gate.start()
    key = f"x-api-key: {k['key']}"
    for path in ["/suppliers/..%2Fadmin", "/suppliers/..%2fadmin", "/suppliers/a%5Cb"]:
        status, _, body, _ = curl("-H", key, gate.url(path))
        assert status == 400, path
        assert json.loads(body)["error"] == "bad_request"
    assert gate.wait_usage(3)[-1]["reason"] == "bad_request"
    # Dot segments are resolved before matching, and the upstream receives what was matched.
    k2 = gate.create_key("--scope", "echo")
    time.sleep(1.2)
    status, seen = echo(gate, "/suppliers/../echo/%7Ex?next=%2F..", f"x-api-key: {k2['key']}")
    assert status == 200
    assert seen["target"] == "/echo/~x?next=%2F.."


def test_escaped_slashes_modes(tmp_path, upstream):
    for mode, status_wanted, target in [("keep", 200, "/echo/a%2Fb"), ("unescape_and_forward", 200, "/echo/a/b")]:
        folder = tmp_path / mode
        folder.mkdir()
        g = Gate(str(folder), upstream.port, extra=f"paths: {{escaped_slashes: {mode}}}\n")
        try:
            k = g.create_key("--scope", "echo")
            g.start()
            status, seen = echo(g, "/echo/a%2fb", f"x-api-key: {k['key']}")
            assert status == status_wanted
            assert seen["target"] == target
        finally:
            g.stop()


def test_lone_surrogate_in_key_store_keeps_gate_and_cli_alive(gate, upstream):
    k = gate.create_key()
    gate.start()
    store = os.path.join(gate.dir, "keys.jsonl")
    good = open(store).read()
    bad = good.replace('"name":"test key"', '"name":"x\\ud800\\u0041"')
    assert bad != good
    with open(store, "w") as f:
        f.write(bad)
    time.sleep(1.2)
    assert gate.proc.poll() is None, "the gate died on a bad key store"
    assert curl("-H", f"x-api-key: {k['key']}", gate.url("/echo"))[0] == 200
    assert "keys.jsonl:1:" in open(gate.stderr_path).read()
    r = gate.cli("keys", "list", check=False)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "surrogate" in r.stderr


def test_extreme_rate_and_burst_are_refused_and_never_trap_the_gate(gate, upstream):
    r = gate.cli("keys", "create", "--name", "x", "--rate", "1/h", "--burst", "3000000000", check=False)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    r = gate.cli("keys", "create", "--name", "x", "--rate", "99999999999/s", check=False)
    assert r.returncode == 1
    k = gate.create_key("--rate", "1/h", "--burst", "1000000")
    gate.start()
    assert curl("-H", f"x-api-key: {k['key']}", gate.url("/echo"))[0] == 200
    # A hand edit past the bounds is refused by the reload, and the gate lives on.
    store = os.path.join(gate.dir, "keys.jsonl")
    text = open(store).read().replace('"burst":1000000', '"burst":3000000000')
    with open(store, "w") as f:
        f.write(text)
    time.sleep(1.2)
    assert gate.proc.poll() is None
    assert curl("-H", f"x-api-key: {k['key']}", gate.url("/echo"))[0] == 200
    assert "burst must be from 1 to" in open(gate.stderr_path).read()


def test_usage_report_survives_absurd_numbers(tmp_path):
    log = tmp_path / "usage.jsonl"
    good = {"ts": "2026-11-23T18:00:00.123Z", "request_id": "r", "decision": "allow", "reason": None, "status": 200,
            "key_id": "k1", "method": "GET", "path": "/a", "duration_ms": 1.5}
    lines = [json.dumps(good)]
    for bad in ["1e999", "NaN", "-Infinity", "9" * 400]:
        lines.append(json.dumps(good).replace('"duration_ms": 1.5', f'"duration_ms": {bad}'))
    lines.append(json.dumps(good).replace('"status": 200', '"status": ' + "9" * 40))
    log.write_text("\n".join(lines) + "\n")
    r = subprocess.run([KEYGATE, "usage", "--log", str(log), "--json"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["lines"] == 6 and doc["malformed"] >= 4
    assert "malformed" in r.stderr


def test_usage_log_on_stdout_survives_a_closed_pipe(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, usage_log='"-"')
    k = g.create_key()
    proc = subprocess.Popen([KEYGATE, "serve", "--config", g.config], stdout=subprocess.PIPE, stderr=open(g.stderr_path, "w"))
    try:
        from conftest import wait_port
        assert wait_port(g.port) and wait_port(g.admin_port)
        assert curl("-H", f"x-api-key: {k['key']}", g.url("/echo"))[0] == 200
        proc.stdout.close()  # the reader goes away
        for _ in range(50):
            assert curl("-H", f"x-api-key: {k['key']}", g.url("/echo"))[0] == 200
        time.sleep(0.5)
        assert proc.poll() is None, "SIGPIPE killed the gate"
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{g.admin_port}/metrics", timeout=5).read().decode()
        dropped = [l for l in metrics.splitlines() if l.startswith("keygate_usage_events_dropped_total ")]
        assert dropped and int(dropped[0].split()[1]) > 0
        assert "usage log write failed (Broken pipe)" in open(g.stderr_path).read()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_truncated_upstream_body_is_logged_as_a_failure(gate, upstream):
    k = gate.create_key()
    gate.start()
    curl("-H", f"x-api-key: {k['key']}", gate.url("/die"))
    event = gate.wait_usage(1)[-1]
    assert event["path"] == "/die"
    assert event["reason"] == "upstream_unavailable"
    assert event["decision"] == "allow"


def test_corrupt_state_file_is_set_aside_and_reported(gate, upstream):
    state = os.path.join(gate.dir, "keys.state.json")
    with open(state, "w") as f:
        f.write('{"quota_used": {"X": ')
    gate.create_key()
    gate.start()
    assert any(n.startswith("keys.state.json.corrupt-") for n in os.listdir(gate.dir))
    assert "key state:" in open(gate.stderr_path).read()


def test_readiness_follows_the_upstream_without_blocking(tmp_path, upstream):
    from conftest import free_port
    dead = free_port()
    g = Gate(str(tmp_path), dead)
    try:
        g.start()
        t = time.time()
        for _ in range(20):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{g.admin_port}/readyz", timeout=5)
                raise AssertionError("ready with no upstream")
            except urllib.error.HTTPError as e:
                assert e.code == 503
        # Twenty probes of a dead upstream answer at once: nothing waits on a connect.
        assert time.time() - t < 2.0
    finally:
        g.stop()


def test_import_json_and_update_clear(gate):
    r = gate.cli("keys", "import", "--name", "legacy", "--rate", "10/s", "--json", input="legacy-secret-0123456789\n")
    rec = json.loads(r.stdout)
    assert rec["name"] == "legacy" and rec["rate"] == "10/s" and "key" not in rec and "hash" in rec
    assert "legacy-secret" not in r.stdout
    k = gate.create_key("--rate", "5/s", "--burst", "3", "--quota", "100/day", "--ttl", "30d", "--allow-ip", "10.0.0.0/8",
                        "--scope", "echo")
    gate.cli("keys", "update", k["id"], "--clear", "rate", "--clear", "quota", "--clear", "expires", "--clear", "allow-ips",
             "--clear", "scopes")
    shown = json.loads(gate.cli("keys", "show", k["id"], "--json").stdout)
    assert shown["rate"] is None and shown["burst"] is None and shown["quota"] is None and shown["expires_at"] is None
    assert shown["allow_ips"] == [] and shown["scopes"] == []
    bad = gate.cli("keys", "update", k["id"], "--clear", "everything", check=False)
    assert bad.returncode == 2


def test_change_whose_audit_cannot_be_written_is_refused(gate):
    k = gate.create_key()
    store = os.path.join(gate.dir, "keys.jsonl")
    before = open(store).read()
    audit = os.path.join(gate.dir, "keys.audit.jsonl")
    os.rename(audit, audit + ".saved")
    os.mkdir(audit)  # an audit log that cannot be appended to
    try:
        r = gate.cli("keys", "revoke", k["id"], check=False)
        assert r.returncode == 1 and "audit" in r.stderr
        assert open(store).read() == before, "the store changed without its audit entry"
    finally:
        os.rmdir(audit)
        os.rename(audit + ".saved", audit)
    gate.cli("keys", "revoke", k["id"])
    assert json.loads(open(audit).read().splitlines()[-1])["action"] == "revoke"


def test_cli_as_root_keeps_the_service_users_ownership(gate):
    if os.geteuid() != 0:
        import pytest
        pytest.skip("needs root")
    service = 65534  # nobody: stands for the gate's own user
    os.chown(gate.dir, service, service)
    gate.create_key()
    for name in ("keys.jsonl", "keys.audit.jsonl", "keys.jsonl.lock"):
        st = os.stat(os.path.join(gate.dir, name))
        assert (st.st_uid, st.st_gid) == (service, service), name


def test_state_dir_keeps_what_the_gate_writes_away_from_the_store(tmp_path, upstream):
    state = tmp_path / "state"
    state.mkdir()
    folder = tmp_path / "gate"
    folder.mkdir()
    g = Gate(str(folder), upstream.port, extra=f"state_dir: {state}\n")
    try:
        k = g.create_key("--quota", "100/day")
        g.start()
        for _ in range(3):
            assert curl("-H", f"x-api-key: {k['key']}", g.url("/echo"))[0] == 200
        g.stop()
        assert (state / "keys.state.json").exists()
        assert not (folder / "keys.state.json").exists(), "the gate wrote beside the key store"
        shown = json.loads(g.cli("keys", "show", k["id"], "--json").stdout)
        assert shown["quota_used"] == 3 and shown["last_used"] is not None
        g.start()  # the count survives a restart
        assert curl("-H", f"x-api-key: {k['key']}", g.url("/echo"))[0] == 200
        g.stop()
        assert json.loads(g.cli("keys", "show", k["id"], "--json").stdout)["quota_used"] == 4
    finally:
        g.stop()
    (tmp_path / "bad").mkdir()
    bad = Gate(str(tmp_path / "bad"), upstream.port, extra=f"state_dir: {tmp_path}/missing\n")
    r = bad.cli("keys", "list", check=False)
    assert r.returncode == 1 and "state_dir" in r.stderr
