"""The key lifecycle from the CLI, live in a running gate."""
import json
import os
import subprocess
import threading
import time

from conftest import Gate, curl


def store(gate):
    with open(os.path.join(gate.dir, "keys.jsonl"), "rb") as f:
        return f.read()


def test_create_prints_once_and_stores_only_the_hash(gate):
    r = gate.cli("keys", "create", "--name", "ERP sync", "--owner", "alice")
    key = [w for w in r.stdout.split() if w.startswith("kg_")][0]
    assert "only time" in r.stdout
    text = store(gate).decode()
    assert key not in text and "sha256:" in text
    record = json.loads(text)
    assert oct(os.stat(os.path.join(gate.dir, "keys.jsonl")).st_mode & 0o777) == "0o600"
    assert key.split("_")[1] == record["id"]


def test_list_show_json_and_states(gate):
    a = gate.create_key("--ttl", "90d")
    b = gate.create_key("--not-before", "2099-01-01")
    c = gate.create_key("--expires", "2020-01-02", "--not-before", "2020-01-01")
    gate.cli("keys", "disable", a["id"])
    listed = {r["id"]: r for r in json.loads(gate.cli("keys", "list", "--json").stdout)}
    assert listed[a["id"]]["state"] == "disabled"
    assert listed[b["id"]]["state"] == "pending"
    assert listed[c["id"]]["state"] == "expired"
    assert all("key" not in r and "last_used" in r for r in listed.values())
    table = gate.cli("keys", "list").stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "OWNER", "STATE", "CREATED", "EXPIRES", "LAST", "USED"]
    assert max(len(l) for l in table) <= 120
    shown = json.loads(gate.cli("keys", "show", b["id"], "--json").stdout)
    assert shown["not_before"] == "2099-01-01T00:00:00Z" and shown["state"] == "pending"
    # An expiry in the past is stored, with a warning; one in the future says nothing.
    r = gate.cli("keys", "update", a["id"], "--expires", "2021-01-01")
    assert "warning" in r.stderr and "in the past" in r.stderr and a["id"] in r.stderr
    assert gate.cli("keys", "update", a["id"], "--expires", "30d").stderr == ""


def test_update_enable_delete_history(gate):
    k = gate.create_key()
    gate.cli("keys", "update", k["id"], "--owner", "bob", "--allow-ip", "10.0.0.0/8", "--actor", "carol")
    gate.cli("keys", "disable", k["id"])
    gate.cli("keys", "enable", k["id"])
    hist = [json.loads(l) for l in gate.cli("keys", "history", k["id"], "--json").stdout.splitlines()]
    assert [h["action"] for h in hist] == ["create", "update", "disable", "enable"]
    assert hist[1]["actor"] == "carol"
    assert hist[1]["changes"]["owner"] == {"old": "alice", "new": "bob"}
    assert all("hash" not in h["changes"] for h in hist)
    gate.cli("keys", "delete", k["id"])
    assert json.loads(gate.cli("keys", "list", "--json").stdout) == []
    assert gate.cli("keys", "history", "--json").stdout.count('"delete"') == 1


def test_rotate_links_and_grace(gate, upstream):
    old = gate.create_key("--scope", "echo")
    gate.start()
    new = json.loads(gate.cli("keys", "rotate", old["id"], "--grace", "1h", "--json").stdout)
    assert new["rotated_from"] == old["id"] and new["scopes"] == ["echo"] and new["key"].startswith("kg_")
    shown = json.loads(gate.cli("keys", "show", old["id"], "--json").stdout)
    assert shown["rotated_to"] == new["id"] and shown["expires_at"] is not None
    time.sleep(1.0)
    # Both work during the grace period.
    assert curl("-H", f"x-api-key: {old['key']}", gate.url("/echo"))[0] == 200
    assert curl("-H", f"x-api-key: {new['key']}", gate.url("/echo"))[0] == 200
    r = gate.cli("keys", "rotate", old["id"], check=False)
    assert r.returncode == 1 and "already rotated" in r.stderr


def test_import_stdin_and_file(gate, upstream, tmp_path):
    gate.cli("keys", "import", "--name", "partner", input="legacy-secret-0123456789\n")
    f = tmp_path / "legacy.tsv"
    f.write_text("legacy-secret-aaaaaaaaaaaa\tone\nlegacy-secret-bbbbbbbbbbbb\ttwo\n")
    gate.cli("keys", "import", "--from", str(f))
    assert len(json.loads(gate.cli("keys", "list", "--json").stdout)) == 3
    gate.start()
    assert curl("-H", "x-api-key: legacy-secret-bbbbbbbbbbbb", gate.url("/echo"))[0] == 200
    r = gate.cli("keys", "import", "--name", "again", input="legacy-secret-0123456789\n", check=False)
    assert r.returncode == 1 and "already in the store" in r.stderr


def test_bad_input_is_refused_and_store_untouched(gate):
    gate.create_key()
    before = store(gate)
    cases = [
        (["keys", "revoke", "NOPE0000"], "no key with id NOPE0000"),
        (["keys", "create", "--name", "x", "--allow-ip", "10.0.0.300/8"], "is not an IP address or CIDR"),
        (["keys", "create", "--name", "x", "--allow-country", "XX"], "is not an ISO 3166-1 alpha-2 code"),
        (["keys", "create", "--name", "x", "--expires", "next tuesday"], "is not a time"),
        (["keys", "create", "--name", "x", "--expires", "2030-01-01", "--ttl", "1d"], "not both"),
        (["keys", "create", "--name", "x", "--scope", "nope"], "is not defined in the policy"),
        (["keys", "create", "--name", "x", "--rate", "fast"], "is not a rate"),
        (["keys", "create", "--name", "x", "--rate", "0/s"], "is not a rate"),
        (["keys", "create", "--name", "x", "--rate", "-1/m"], "is not a rate"),
        (["keys", "create", "--name", "x", "--quota", "lots"], "is not a quota"),
        (["keys", "create", "--name", "x\x1b]0;pwned\x07"], "--name must not contain control characters"),
        (["keys", "create", "--name", "x", "--owner", "a\u2028b"], "--owner must not contain control characters"),
        (["keys", "revoke", "KEYID", "--reason", "leaked\x1b[2J"], "--reason must not contain control characters"),
    ]
    kid = json.loads(gate.cli("keys", "list", "--json").stdout)[0]["id"]
    for args, message in cases:
        args = [kid if a == "KEYID" else a for a in args]
        r = gate.cli(*args, check=False)
        assert r.returncode == 1, args
        assert message in r.stderr, (args, r.stderr)
        assert r.stderr.count("\n") == 1, r.stderr
    assert store(gate) == before
    r = gate.cli("keys", "create", check=False)
    assert r.returncode == 2


def test_control_characters_in_a_hand_edited_store_never_reach_the_terminal(gate):
    k = gate.create_key()
    path = os.path.join(gate.dir, "keys.jsonl")
    text = open(path).read().replace('"name":"test key"', '"name":"evil\\u001b]0;pwned\\u0007"')
    assert "\\u001b" in text
    open(path, "w").write(text)
    for args in (("keys", "list"), ("keys", "show", k["id"])):
        out = gate.cli(*args).stdout
        assert "evil?]0;pwned?" in out and "\x1b" not in out and "\x07" not in out, (args, out)
    # Scripts get the exact value, JSON-escaped.
    assert json.loads(gate.cli("keys", "show", k["id"], "--json").stdout)["name"] == "evil\x1b]0;pwned\x07"


def test_broken_store_line_is_named(gate):
    gate.create_key()
    with open(os.path.join(gate.dir, "keys.jsonl"), "a") as f:
        f.write('{"id": "x", "name": 5}\n')
    r = gate.cli("keys", "create", "--name", "y", check=False)
    assert r.returncode == 1 and "keys.jsonl:2:" in r.stderr
    r = gate.cli("keys", "list", check=False)
    assert r.returncode == 1 and "keys.jsonl:2:" in r.stderr


def test_parallel_creates_lose_nothing(gate):
    procs = [subprocess.Popen([gate_bin(), "keys", "create", "--name", f"p{i}", "--config", gate.config], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for i in range(16)]
    for p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read()
    names = sorted(r["name"] for r in json.loads(gate.cli("keys", "list", "--json").stdout))
    assert names == sorted(f"p{i}" for i in range(16))
    assert len(gate.cli("keys", "history", "--json").stdout.splitlines()) == 16


def gate_bin():
    from conftest import KEYGATE
    return KEYGATE


def test_last_used_survives_restart(gate, upstream):
    k = gate.create_key()
    unused = gate.create_key()
    gate.start()
    assert curl("-H", f"x-api-key: {k['key']}", gate.url("/echo"))[0] == 200
    gate.stop()  # flushes the state on the way out
    listed = {r["id"]: r for r in json.loads(gate.cli("keys", "list", "--json").stdout)}
    assert listed[k["id"]]["last_used"] is not None
    assert listed[unused["id"]]["last_used"] is None
    gate.start()
    assert "never" in gate.cli("keys", "list").stdout
