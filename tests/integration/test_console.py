"""The console's JSON API over HTTP, against a real gate with a console listener: sign-in,
lockout, session expiry, CSRF, roles, the key lifecycle through the page's API, the audit
trail, usage rollups, and secrets shown exactly once."""
import json
import os
import socket
import threading
import time

import pytest

from conftest import connections_on, console_gate_with, curl, free_port, wait_port
from console_client import ConsoleClient

ADMIN_PW = "correct horse battery"
VIEWER_PW = "viewer password"


@pytest.fixture
def console_gate(tmp_path, upstream):
    g = console_gate_with(str(tmp_path), upstream.port, [("alice", "admin", ADMIN_PW), ("victor", "viewer", VIEWER_PW)], ", session_ttl: 3s")
    g.start()
    assert wait_port(g.console_port)
    yield g
    g.stop()


def admin(g):
    c = ConsoleClient(g.console_port)
    assert c.login("alice", ADMIN_PW)[0] == 200
    return c


def test_users_file_holds_scrypt_hashes_never_passwords(console_gate):
    text = open(os.path.join(console_gate.dir, "console-users.jsonl")).read()
    assert ADMIN_PW not in text and VIEWER_PW not in text
    users = [json.loads(l) for l in text.splitlines()]
    assert [u["name"] for u in users] == ["alice", "victor"]
    assert all(u["password"].startswith("scrypt$32768$8$1$") for u in users)
    assert oct(os.stat(os.path.join(console_gate.dir, "console-users.jsonl")).st_mode & 0o777) == "0o600"
    listed = json.loads(console_gate.cli("console-users", "list", "--json").stdout)
    assert [(u["name"], u["role"]) for u in listed] == [("alice", "admin"), ("victor", "viewer")] and "password" not in listed[0]
    # The password comes from stdin only; a short one or a second user of the same name is refused.
    r = console_gate.cli("console-users", "add", "eve", "--role", "admin", input="short\n", check=False)
    assert r.returncode == 1 and "at least 8" in r.stderr
    r = console_gate.cli("console-users", "add", "alice", "--role", "viewer", input="another password\n", check=False)
    assert r.returncode == 1 and "already exists" in r.stderr


def test_login_cookie_and_security_headers(console_gate):
    c = ConsoleClient(console_gate.console_port)
    status, headers, body = c.login("alice", ADMIN_PW)
    assert status == 200 and body["user"] == "alice" and body["role"] == "admin" and len(body["csrf"]) >= 32
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    for path in ("/", "/app.js", "/api/keys"):
        _, h, _, _ = c.request("GET", path)
        assert "frame-ancestors 'none'" in h["content-security-policy"] and "script-src 'self'" in h["content-security-policy"]
        assert "unsafe-inline" not in h["content-security-policy"]
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
    page = c.request("GET", "/")[3].decode()
    assert "<script src=\"/app.js\"" in page and "<script>" not in page and "style=" not in page


def test_wrong_password_is_slow_and_locks_out_the_user_only(console_gate):
    c = ConsoleClient(console_gate.console_port)
    t = time.time()
    status, _, body = c.login("alice", "wrong password")
    assert status == 401 and body["error"] == "invalid_credentials" and time.time() - t >= 0.9
    # Unknown users get the same answer.
    assert c.login("nobody", "wrong password")[2]["error"] == "invalid_credentials"
    results = []
    threads = [threading.Thread(target=lambda: results.append(ConsoleClient(console_gate.console_port).login("alice", "guess")[0])) for _ in range(10)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # Locked: even the right password is refused, with a time to wait.
    status, headers, body = ConsoleClient(console_gate.console_port).login("alice", ADMIN_PW)
    assert status == 429 and body["error"] == "locked_out" and int(headers["retry-after"]) > 60
    # Other users still sign in.
    assert ConsoleClient(console_gate.console_port).login("victor", VIEWER_PW)[0] == 200


def test_session_expiry_logout_and_csrf(console_gate):
    c = admin(console_gate)
    assert c.request("GET", "/api/keys")[0] == 200
    # Changes need the token from login.
    status, _, body, _ = c.request("POST", "/api/keys", {"name": "x"}, csrf=False)
    assert status == 403 and body["error"] == "csrf"
    status, _, body, _ = c.request("POST", "/api/keys", {"name": "x"}, csrf=False, headers={"X-CSRF-Token": "forged"})
    assert status == 403 and body["error"] == "csrf"
    # Logout ends the session on the server, not just in the browser.
    stolen = c.cookie
    assert c.request("POST", "/api/logout", {})[0] == 200
    c.cookie = stolen
    assert c.request("GET", "/api/keys")[0] == 401
    # Sessions expire (session_ttl: 3s here).
    c2 = admin(console_gate)
    assert c2.request("GET", "/api/keys")[0] == 200
    time.sleep(3.3)
    status, _, body, _ = c2.request("GET", "/api/keys")
    assert status == 401 and body["error"] == "not_signed_in"
    # No cookie at all.
    assert ConsoleClient(console_gate.console_port).request("GET", "/api/keys")[0] == 401


def test_viewer_reads_but_cannot_change(console_gate):
    a = admin(console_gate)
    created = a.request("POST", "/api/keys", {"name": "viewer test"})[2]
    v = ConsoleClient(console_gate.console_port)
    assert v.login("victor", VIEWER_PW)[0] == 200
    assert v.request("GET", "/api/keys")[0] == 200
    assert v.request("GET", f"/api/keys/{created['id']}")[0] == 200
    assert v.request("GET", "/api/audit")[0] == 200
    for method, path, body in [("POST", "/api/keys", {"name": "nope"}), ("PATCH", f"/api/keys/{created['id']}", {"owner": "x"}),
                               ("POST", f"/api/keys/{created['id']}/revoke", {}), ("DELETE", f"/api/keys/{created['id']}", None)]:
        status, _, answer, _ = v.request(method, path, body)
        assert status == 403 and answer["error"] == "forbidden", (method, path)


def test_create_use_revoke_through_the_console(console_gate):
    c = admin(console_gate)
    status, _, created, raw = c.request("POST", "/api/keys", {
        "name": "orders sync", "owner": "bob", "scopes": ["echo"], "rate": "50/s", "quota": "1000/day",
    })
    assert status == 201 and created["key"].startswith("kg_") and "hash" not in created
    key, kid = created["key"], created["id"]
    # The gate applies it within a second.
    deadline = time.time() + 2
    while curl("-H", f"x-api-key: {key}", console_gate.url("/echo"))[0] != 200:
        assert time.time() < deadline, "the new key did not work within a second"
        time.sleep(0.05)
    # Validation errors are the CLI's.
    status, _, body, _ = c.request("POST", "/api/keys", {"name": "bad", "rate": "fast"})
    cli = console_gate.cli("keys", "create", "--name", "bad", "--rate", "fast", check=False)
    assert status == 400 and body["message"] in cli.stderr
    # Revoke: refused within a second.
    status, _, revoked, _ = c.request("POST", f"/api/keys/{kid}/revoke", {"reason": "leaked"})
    assert status == 200 and revoked["state"] == "revoked"
    t = time.time()
    while curl("-H", f"x-api-key: {key}", console_gate.url("/echo"))[0] != 401:
        assert time.time() - t < 1.0, "a revoked key still worked after a second"
        time.sleep(0.05)
    # The CLI sees what the console did, with the console user as the actor.
    shown = json.loads(console_gate.cli("keys", "show", kid, "--json").stdout)
    assert shown["status"] == "revoked" and shown["revoke_reason"] == "leaked"
    audit = c.request("GET", f"/api/audit?key={kid}")[2]
    assert [e["action"] for e in audit] == ["revoke", "create"] and {e["actor"] for e in audit} == {"alice"}
    log = [json.loads(l) for l in open(os.path.join(console_gate.dir, "keys.audit.jsonl"))]
    assert any(e["actor"] == "alice" and e["key_id"] == kid for e in log)
    # And the console sees what the CLI does.
    made = console_gate.create_key()
    assert any(k["id"] == made["id"] for k in c.request("GET", "/api/keys")[2])


def test_update_disable_enable_rotate_delete(console_gate):
    c = admin(console_gate)
    created = c.request("POST", "/api/keys", {"name": "lifecycle", "owner": "ops", "rate": "10/s"})[2]
    kid = created["id"]
    status, _, updated, _ = c.request("PATCH", f"/api/keys/{kid}", {"owner": None, "description": "nightly job", "rate": None})
    assert status == 200 and updated["owner"] is None and updated["description"] == "nightly job" and updated["rate"] is None
    assert c.request("POST", f"/api/keys/{kid}/disable", {})[2]["state"] == "disabled"
    assert c.request("POST", f"/api/keys/{kid}/enable", {})[2]["state"] == "active"
    status, _, rotated, _ = c.request("POST", f"/api/keys/{kid}/rotate", {"grace": "2h"})
    assert status == 201 and rotated["key"].startswith("kg_") and rotated["rotated_from"] == kid
    assert rotated["old"]["rotated_to"] == rotated["id"] and rotated["old"]["expires_at"]
    assert c.request("POST", f"/api/keys/{kid}/rotate", {"grace": "soon"})[0] == 400
    assert c.request("DELETE", f"/api/keys/{kid}")[0] == 200
    assert c.request("GET", f"/api/keys/{kid}")[0] == 404
    actions = [e["action"] for e in c.request("GET", f"/api/audit?key={kid}")[2]]
    assert actions == ["delete", "rotate", "enable", "disable", "update", "create"]
    # CSV export, with the same entries.
    status, headers, _, raw = c.request("GET", f"/api/audit?key={kid}&format=csv")
    lines = raw.decode().strip().split("\r\n")
    assert status == 200 and headers["content-type"].startswith("text/csv") and lines[0] == "ts,actor,action,key_id,changes" and len(lines) == 7


def test_secrets_are_shown_once(console_gate):
    c = admin(console_gate)
    created = c.request("POST", "/api/keys", {"name": "secret test"})[2]
    rotated = c.request("POST", f"/api/keys/{created['id']}/rotate", {"grace": "1h"})[2]
    store = open(os.path.join(console_gate.dir, "keys.jsonl")).read()
    hashes = [json.loads(l)["hash"] for l in store.splitlines()]
    secrets = [created["key"], rotated["key"]]
    seen = b""
    for path in ("/api/keys", f"/api/keys/{created['id']}", f"/api/keys/{rotated['id']}", "/api/audit", "/api/audit?format=csv",
                 f"/api/keys/{created['id']}/usage?window=24h", "/api/session", "/api/policy", "/", "/app.js"):
        seen += c.request("GET", path)[3]
    for s in secrets + hashes:
        assert s.encode() not in seen
        assert s.split(":")[-1].encode() not in seen


def test_usage_rollups_after_traffic_survive_a_restart(console_gate):
    c = admin(console_gate)
    created = c.request("POST", "/api/keys", {"name": "busy", "scopes": ["echo"]})[2]
    key, kid = created["key"], created["id"]
    time.sleep(0.6)
    for _ in range(5):
        assert curl("-H", f"x-api-key: {key}", console_gate.url("/echo/orders/42"))[0] == 200
    for _ in range(2):
        assert curl("-H", f"x-api-key: {key}", console_gate.url("/suppliers"))[0] == 403
    deadline = time.time() + 4
    while True:
        u = c.request("GET", f"/api/keys/{kid}/usage?window=24h")[2]
        if u["requests"] >= 7 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert u["requests"] == 7 and u["denied"] == 2 and len(u["buckets"]) == 24 and u["buckets"][-1]["requests"] == 7
    assert u["by_route"]["GET /echo/orders/:id"] == 5 and u["by_reason"] == {"scope_denied": 2} and u["by_status"] == {"2xx": 5, "4xx": 2}
    listed = [k for k in c.request("GET", "/api/keys")[2] if k["id"] == kid][0]
    assert listed["requests_24h"] == 7 and listed["spark"][-1] == 7 and listed["last_used"]
    month = c.request("GET", f"/api/keys/{kid}/usage?window=30d")[2]
    assert len(month["buckets"]) == 30 and month["buckets"][-1]["requests"] == 7
    console_gate.stop()
    assert os.path.exists(os.path.join(console_gate.dir, "keys.rollups.json"))
    console_gate.start()
    assert wait_port(console_gate.console_port)
    c = admin(console_gate)
    assert c.request("GET", f"/api/keys/{kid}/usage?window=24h")[2]["requests"] == 7
    # The file is the gate's, but it lives on disk: counts near 2^63 in two hours must not
    # overflow the window's sum.
    console_gate.stop()
    path = os.path.join(console_gate.dir, "keys.rollups.json")
    saved = json.load(open(path))
    hour = int(time.time() // 3600)
    huge = {"requests": 9.1e18, "denied": 9.1e18, "reasons": {"revoked": 9.1e18}, "statuses": {"4xx": 9.1e18},
            "routes": {"GET /": 9.1e18}, "countries": {"-": 9.1e18}}
    saved["hourly"][kid] = {str(hour): huge, str(hour - 1): huge}
    json.dump(saved, open(path, "w"))
    console_gate.start()
    assert wait_port(console_gate.console_port)
    c = admin(console_gate)
    status, _, u, _ = c.request("GET", f"/api/keys/{kid}/usage?window=48h")
    assert status == 200 and u["requests"] == 2 * 10**12 and u["by_route"]["GET /"] == 2 * 10**12
    assert c.request("GET", "/api/keys")[0] == 200
    assert console_gate.proc.poll() is None


def test_removed_user_loses_the_session(console_gate):
    c = ConsoleClient(console_gate.console_port)
    assert c.login("victor", VIEWER_PW)[0] == 200
    console_gate.cli("console-users", "remove", "victor")
    assert c.request("GET", "/api/keys")[0] == 401
    assert ConsoleClient(console_gate.console_port).login("victor", VIEWER_PW)[0] == 401


def test_a_new_password_ends_the_old_sessions(console_gate):
    # The documented way to change a password (or a role) is remove, then add: a session
    # signed in before, perhaps a stolen cookie, must not outlive it.
    c = admin(console_gate)
    console_gate.cli("console-users", "remove", "alice")
    console_gate.cli("console-users", "add", "alice", "--role", "viewer", input="a brand new password\n")
    status, _, body, _ = c.request("GET", "/api/keys")
    assert status == 401 and body["error"] == "not_signed_in"
    assert c.request("POST", "/api/keys", {"name": "after"})[0] == 401
    fresh = ConsoleClient(console_gate.console_port)
    assert fresh.login("alice", "a brand new password")[0] == 200
    assert fresh.request("GET", "/api/keys")[0] == 200


def test_key_text_with_control_characters_is_refused(console_gate):
    c = admin(console_gate)
    for field in ("name", "owner", "description"):
        body = {"name": "fine", field: "a\u001b]0;title\u0007b"}
        status, _, answer, _ = c.request("POST", "/api/keys", body)
        assert status == 400 and "control characters" in answer["message"], (field, status, answer)
    assert console_gate.cli("keys", "create", "--name", "a\x1bb", check=False).returncode != 0
    # A field of the wrong type is refused, not ignored (a number where a duration belongs
    # would otherwise rotate with the default grace).
    kid = c.request("POST", "/api/keys", {"name": "typed"})[2]["id"]
    for action, body in (("rotate", {"grace": 5}), ("revoke", {"reason": 5})):
        status, _, answer, _ = c.request("POST", f"/api/keys/{kid}/{action}", body)
        assert status == 400 and "must be a string" in answer["message"], (action, status, answer)
    key = c.request("GET", f"/api/keys/{kid}")[2]
    assert key["state"] == "active" and not key.get("rotated_to")


def test_a_sign_in_name_cannot_forge_a_log_line(console_gate):
    forged = "x\n2026-12-01T00:00:00.000Z info alice in\u2028\u0085\x1b[2J"
    status = ConsoleClient(console_gate.console_port).login(forged, "wrong password")[0]
    assert status == 401
    lines = open(console_gate.stderr_path).read().splitlines()
    failed = [l for l in lines if "failed sign-in" in l]
    assert len(failed) == 1 and "x\\n2026-12-01T00:00:00.000Z info alice in" in failed[0], failed
    assert "\\u{2028}" in failed[0] and "\\u{85}" in failed[0] and "\\u{1b}" in failed[0] and "\x1b" not in failed[0]
    assert not any(l.startswith("2026-12-01T00:00:00.000Z") for l in lines)


def test_console_listener_is_not_the_proxy(console_gate):
    # The proxy knows nothing of the console's paths; the console refuses the proxy's.
    assert curl(console_gate.url("/api/keys"))[0] == 401 and json.loads(curl(console_gate.url("/api/keys"))[2])["error"] == "missing_key"
    r = console_gate.cli("check", check=False)
    assert r.returncode == 0


def test_console_over_tls_uses_the_gates_certificates(tmp_path, upstream):
    from test_tls import tls_gate
    port = free_port()
    g = tls_gate(tmp_path, upstream, extra=f'console: {{ listen: "127.0.0.1:{port}", tls: true }}\n')
    g.cli("console-users", "add", "alice", "--role", "admin", input=ADMIN_PW + "\n")
    g.start()
    try:
        assert wait_port(port)
        ca = os.path.join(g.dir, "ca.pem")
        base = ["--cacert", ca, "--resolve", f"api.test:{port}:127.0.0.1"]
        status, headers, body, _ = curl(*base, f"https://api.test:{port}/")
        assert status == 200 and b"/app.js" in body and "frame-ancestors 'none'" in headers["content-security-policy"]
        status, headers, body, _ = curl(*base, "-X", "POST", "-H", "Content-Type: application/json",
                                        "--data", json.dumps({"user": "alice", "password": ADMIN_PW}), f"https://api.test:{port}/api/login")
        assert status == 200 and json.loads(body)["user"] == "alice"
        # Behind TLS the session cookie is Secure.
        assert "Secure" in headers["set-cookie"] and "HttpOnly" in headers["set-cookie"]
        # Plain HTTP to the TLS console gets nowhere, and the console stays up.
        assert curl(f"http://127.0.0.1:{port}/", timeout=3)[0] == 0
        assert curl(*base, f"https://api.test:{port}/favicon.svg")[0] == 200
    finally:
        g.stop()


def test_a_flood_of_sign_ins_is_bounded(console_gate):
    # Each sign-in costs a memory-hard hash: beyond a bounded number in flight the console
    # answers 503 at once instead of queueing work, and it stays responsive.
    results = []
    lock = threading.Lock()

    def attempt(i):
        status = ConsoleClient(console_gate.console_port).login(f"nobody{i}", "wrong password")[0]
        with lock:
            results.append(status)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(80)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert set(results) <= {401, 429, 503} and results.count(503) >= 1, results
    t = time.time()
    status, _, _, raw = ConsoleClient(console_gate.console_port).request("GET", "/")
    assert status == 200 and b"/app.js" in raw and time.time() - t < 1.0


def test_idle_connections_on_the_console_are_capped(console_gate):
    # Past 256 open connections the console closes new ones as they come: a flood of idle
    # sockets cannot take the descriptors the proxy needs. Once they go, it answers again.
    held = [socket.create_connection(("127.0.0.1", console_gate.console_port), timeout=5) for _ in range(300)]
    time.sleep(0.5)
    # Connections on the console's port, not all descriptors: the gate opens others now and then.
    held_by_gate = connections_on(console_gate.proc.pid, console_gate.console_port)
    assert 0 < held_by_gate <= 256, f"the console holds {held_by_gate} connections"
    held[-1].settimeout(2)
    assert held[-1].recv(10) == b""
    for s in held:
        s.close()
    time.sleep(0.3)
    assert ConsoleClient(console_gate.console_port).request("GET", "/")[0] == 200
