"""Network policy: trusted proxies, allowlists, GeoIP countries, scopes and public routes."""
import json
import os
import shutil
import subprocess
import time

import pytest

import mmdb_writer
from conftest import KEYGATE, Gate, curl

SHARED = os.path.join(os.path.dirname(__file__), "../../../shared/geoip")
NETWORKS = [("81.2.69.0/24", "GB"), ("175.16.199.0/24", "CN"), ("203.0.113.0/24", "KP"), ("2001:db8::/32", "DE"), ("89.160.20.0/24", "SE")]


@pytest.fixture
def geo_gate(tmp_path, upstream):
    mmdb_writer.write(str(tmp_path / "countries.mmdb"), NETWORKS)
    g = Gate(str(tmp_path), upstream.port, extra="""geoip_db: countries.mmdb
trusted_proxies: ["127.0.0.1/32"]
access:
  countries: { deny: [KP], unknown: deny }
""")
    yield g
    g.stop()


def via(gate, key, client, path="/echo", *extra):
    return curl("-H", f"x-api-key: {key}", "-H", f"X-Forwarded-For: {client}", *extra, gate.url(path))


def test_generated_database_reads_back(tmp_path):
    mmdb_writer.write(str(tmp_path / "c.mmdb"), NETWORKS)
    for ip, cc, shown in [("81.2.69.142", "GB", None), ("2001:db8::1", "DE", None), ("::ffff:175.16.199.9", "CN", "175.16.199.9"),
                          ("8.8.8.8", "unknown", None)]:
        r = subprocess.run([KEYGATE, "geoip", ip, "--db", str(tmp_path / "c.mmdb")], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.split() == [shown or ip, cc], r.stdout + r.stderr


@pytest.mark.skipif(not os.path.exists(SHARED), reason="MaxMind's test databases are not beside the project")
def test_cross_check_with_maxmind_test_database():
    db = os.path.join(SHARED, "GeoIP2-Country-Test.mmdb")
    for ip, cc in [("81.2.69.142", "GB"), ("89.160.20.112", "SE"), ("216.160.83.56", "US"), ("2001:218::1", "JP")]:
        r = subprocess.run([KEYGATE, "geoip", ip, "--db", db], capture_output=True, text=True)
        assert r.stdout.split() == [ip, cc]


@pytest.mark.skipif(not os.path.exists(os.path.join(SHARED, "bad")), reason="MaxMind's broken databases are not beside the project")
def test_every_broken_database_is_refused_cleanly(tmp_path):
    for name in sorted(os.listdir(os.path.join(SHARED, "bad"))):
        r = subprocess.run([KEYGATE, "geoip", "81.2.69.142", "--db", os.path.join(SHARED, "bad", name)], capture_output=True, text=True, timeout=20)
        assert r.returncode == 1, (name, r.returncode, r.stdout, r.stderr[-300:])
        assert r.stderr.startswith("keygate: ") and r.stderr.count("\n") == 1, (name, r.stderr)


def test_country_rules_and_header(geo_gate, upstream):
    k = geo_gate.create_key()
    geo_gate.start()
    status, _, body, _ = via(geo_gate, k["key"], "81.2.69.142")
    assert status == 200
    headers = {n.lower(): v for n, v in json.loads(body)["headers"]}
    assert headers["x-keygate-country"] == "GB"
    assert headers["x-forwarded-for"] == "81.2.69.142, 127.0.0.1"
    status, _, body, _ = via(geo_gate, k["key"], "203.0.113.5")
    assert status == 403 and json.loads(body)["error"] == "country_not_allowed"
    status, _, body, _ = via(geo_gate, k["key"], "8.8.8.8")  # unknown: deny
    assert status == 403
    # The country is checked before the key: no key needed to be refused.
    status, _, body, _ = curl("-H", "X-Forwarded-For: 203.0.113.5", geo_gate.url("/echo"))
    assert status == 403
    lines = geo_gate.wait_usage(4)
    assert {l["client_ip"] for l in lines} == {"81.2.69.142", "203.0.113.5", "8.8.8.8"}
    assert [l["country"] for l in lines if l["client_ip"] == "81.2.69.142"] == ["GB"]


def test_a_country_code_that_is_not_two_letters_is_no_country(tmp_path, upstream):
    # A damaged or foreign database may hold any two bytes as iso_code: they must not reach
    # the upstream's head or the usage log's JSON.
    mmdb_writer.write(str(tmp_path / "odd.mmdb"), [("81.2.69.0/24", "\r\n"), ("175.16.199.0/24", '"x'), ("89.160.20.0/24", "se")])
    g = Gate(str(tmp_path), upstream.port, extra='geoip_db: odd.mmdb\ntrusted_proxies: ["127.0.0.1/32"]\n')
    try:
        k = g.create_key()
        g.start()
        for client, want in (("81.2.69.142", None), ("175.16.199.9", None), ("89.160.20.1", "SE")):
            status, _, body, _ = via(g, k["key"], client)
            assert status == 200, (client, body)
            headers = {n.lower(): v for n, v in json.loads(body)["headers"]}
            assert headers.get("x-keygate-country") == want, (client, headers)
        # Each loop writes its own batches: lines of different connections may come in any order.
        lines = g.wait_usage(3)
        assert {l["client_ip"]: l["country"] for l in lines} == {"81.2.69.142": None, "175.16.199.9": None, "89.160.20.1": "SE"}
        r = subprocess.run([KEYGATE, "geoip", "81.2.69.142", "--db", str(tmp_path / "odd.mmdb")], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.split() == ["81.2.69.142", "unknown"], r.stdout + r.stderr
    finally:
        g.stop()


def test_per_key_countries_and_ips(geo_gate, upstream):
    only_se = geo_gate.create_key("--allow-country", "SE")
    not_cn = geo_gate.create_key("--deny-country", "CN")
    fenced = geo_gate.create_key("--allow-ip", "81.2.69.0/25", "--allow-ip", "2001:db8::/48")
    geo_gate.start()
    assert via(geo_gate, only_se["key"], "89.160.20.1")[0] == 200
    assert via(geo_gate, only_se["key"], "81.2.69.1")[0] == 403
    assert via(geo_gate, not_cn["key"], "175.16.199.1")[0] == 403
    assert via(geo_gate, not_cn["key"], "81.2.69.1")[0] == 200
    assert via(geo_gate, fenced["key"], "81.2.69.100")[0] == 200
    assert via(geo_gate, fenced["key"], "81.2.69.200")[0] == 403
    assert via(geo_gate, fenced["key"], "2001:db8::7")[0] == 200


def test_forwarded_chain_only_from_trusted_peer(tmp_path, upstream):
    g = Gate(str(tmp_path), upstream.port, extra='access:\n  allow_ips: ["198.51.100.0/24"]\n')
    k = g.create_key()
    g.start()
    try:
        # 127.0.0.1 is not a trusted proxy here: the header is ignored and the peer is used.
        assert via(g, k["key"], "198.51.100.1")[0] == 403
    finally:
        g.stop()


def test_forwarded_header_for(geo_gate, upstream):
    k = geo_gate.create_key()
    geo_gate.start()
    status, _, _, _ = curl("-H", f"x-api-key: {k['key']}", "-H", 'Forwarded: for="[2001:db8::5]:443";proto=https', geo_gate.url("/echo"))
    assert status == 200
    assert geo_gate.wait_usage(1)[-1]["country"] == "DE"


def test_geoip_database_reloads_when_replaced(geo_gate, upstream):
    k = geo_gate.create_key()
    geo_gate.start()
    assert via(geo_gate, k["key"], "81.2.69.1")[0] == 200
    new = os.path.join(geo_gate.dir, "new.mmdb")
    mmdb_writer.write(new, [("81.2.69.0/24", "KP")] + NETWORKS[1:])
    os.rename(new, os.path.join(geo_gate.dir, "countries.mmdb"))
    t = time.time()
    while time.time() - t < 3 and via(geo_gate, k["key"], "81.2.69.1")[0] != 403:
        time.sleep(0.1)
    assert time.time() - t < 1.5
    # A broken replacement keeps the old database.
    with open(os.path.join(geo_gate.dir, "countries.mmdb"), "wb") as f:
        f.write(b"not a database")
    time.sleep(0.8)
    assert via(geo_gate, k["key"], "81.2.69.1")[0] == 403
    assert via(geo_gate, k["key"], "89.160.20.1")[0] == 200


def test_scopes_normalise_paths(gate, upstream):
    k = gate.create_key("--scope", "suppliers.read")
    gate.start()
    assert curl("-H", f"x-api-key: {k['key']}", gate.url("/suppliers/7"))[0] == 200
    for sneaky in ["/suppliers/../echo", "/suppliers/%2e%2e/echo", "/suppliers/%2E%2E/echo", "/suppliers/7/notes"]:
        status, _, body, _ = curl("--path-as-is", "-H", f"x-api-key: {k['key']}", gate.url(sneaky))
        assert status == 403 and json.loads(body)["error"] == "scope_denied", sneaky


def test_policy_errors_name_file_and_line(tmp_path):
    path = tmp_path / "keygate.yaml"
    path.write_text("""upstream: "http://127.0.0.1:9000"
geoip_db: missing.mmdb
access:
  allow_ips: ["10.0.0.0/8", "300.1.1.1"]
  countries: { allow: [GB, ZZ], deny: [GB] }
public_routes: ["GET /a/../b", "FETCH"]
scopes:
  a: ["GET /x/**/y"]
""")
    r = subprocess.run([KEYGATE, "check", "--config", str(path)], capture_output=True, text=True)
    assert r.returncode == 1
    lines = r.stderr.strip().split("\n")
    assert lines == [
        "keygate: " + str(tmp_path) + "/keygate.yaml:2: geoip_db: cannot read " + str(tmp_path) + "/missing.mmdb",
        str(path) + ':4: access.allow_ips[1]: "300.1.1.1" is not a CIDR',
        str(path) + ':5: access.countries.allow[1]: "ZZ" is not an ISO 3166-1 alpha-2 country code',
        str(path) + ':6: public_routes[0]: route "GET /a/../b" has a dot segment and can never match',
        str(path) + ':6: public_routes[1]: route "FETCH" must be "METHOD /path"',
        str(path) + ':8: scopes.a[0]: route "GET /x/**/y": ** is allowed only as the last segment',
        str(path) + ":5: access.countries: GB both allowed and denied",
    ], r.stderr
    path.write_text('upstream: "http://127.0.0.1:9000"\nlisten: "0.0.0.0:1"\nlisten: "0.0.0.0:2"\n')
    r = subprocess.run([KEYGATE, "check", "--config", str(path)], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().endswith('keygate.yaml:3: duplicate field "listen"'), r.stderr
