"""Several gates, one policy: limits, quotas, last use and revocations shared through a real
redis-server (started here on a free loopback port), with three real gates serving copies of
one read-only key file."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import Gate, free_port, metric, wait_port


class Redis:
    def __init__(self, tmp, port=None):
        self.port = port or free_port()
        self.dir = tmp
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_port(self.port), "redis-server did not start"
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10).stdout.strip()


class Cutter:
    """A TCP relay between one gate and Redis that the test can cut and restore, to take a
    single gate away from the fleet while Redis and the others carry on."""

    def __init__(self, target_port):
        self.port = free_port()
        self.target = target_port
        self.cut = threading.Event()
        self.conns = []
        self.lock = threading.Lock()
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", self.port))
        self.server.listen(16)
        self.server.settimeout(0.1)
        self.running = True
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while self.running:
            try:
                client, _ = self.server.accept()
            except OSError:
                continue
            if self.cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=1)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    def pump(self, a, b):
        try:
            while not self.cut.is_set():
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def sever(self):
        self.cut.set()
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns = []

    def restore(self):
        self.cut.clear()

    def close(self):
        self.running = False
        self.sever()
        self.server.close()


@pytest.fixture
def redis(tmp_path):
    r = Redis(str(tmp_path)).start()
    yield r
    r.stop()


def cluster_block(port, mode="local", sync="100ms"):
    return f"""cluster:
  redis: "redis://127.0.0.1:{port}/0"
  sync_interval: {sync}
  on_redis_down: {mode}
"""


class Fleet:
    """A master store (where the CLI runs) and three gates, each with a read-only copy of it
    and a state_dir of its own."""

    def __init__(self, tmp, upstream_port, redis_port, mode="local", replicas=3, redis_ports=None):
        os.makedirs(os.path.join(tmp, "master"))
        self.master = Gate(os.path.join(tmp, "master"), upstream_port, extra=cluster_block(redis_port, mode))
        self.gates = []
        for i in range(3):
            d = os.path.join(tmp, f"gate{i}")
            os.makedirs(os.path.join(d, "state"))
            port = (redis_ports or [redis_port] * 3)[i]
            extra = cluster_block(port, mode) + f"state_dir: state\nlimits:\n  replicas: {replicas}\n"
            self.gates.append(Gate(d, upstream_port, extra=extra))

    def copy_keys(self):
        src = os.path.join(self.master.dir, "keys.jsonl")
        for g in self.gates:
            dst = os.path.join(g.dir, "keys.jsonl")
            if os.path.exists(dst):
                os.chmod(dst, 0o644)
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o444)

    def start(self):
        self.copy_keys()
        for g in self.gates:
            g.start()
        return self

    def stop(self):
        for g in self.gates:
            g.stop()


@pytest.fixture
def fleet_dir(tmp_path):
    return str(tmp_path)


def get(gate, key, path="/echo", conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", gate.port, timeout=5)
    c.request("GET", path, headers={"x-api-key": key} if key else {})
    r = c.getresponse()
    body = r.read()
    if conn is None:
        c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def ready(gate):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{gate.admin_port}/readyz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_for(predicate, timeout, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def all_alive(fleet):
    return all(g.proc is not None and g.proc.poll() is None for g in fleet.gates)


def test_fleet_rate_holds_for_the_fleet(fleet_dir, upstream, redis):
    fleet = Fleet(fleet_dir, upstream.port, redis.port)
    try:
        key = fleet.master.create_key("--rate", "40/s", "--burst", "4")["key"]
        fleet.start()
        allowed = []
        stop_at = time.time() + 5.0
        lock = threading.Lock()

        def hammer(gate):
            conn = http.client.HTTPConnection("127.0.0.1", gate.port, timeout=5)
            while time.time() < stop_at:
                status, _, _ = get(gate, key, conn=conn)
                if status == 200:
                    with lock:
                        allowed.append(time.time())
                else:
                    assert status == 429

        started = time.time()
        threads = [threading.Thread(target=hammer, args=(g,)) for g in fleet.gates]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Steady state: the last four seconds, after the first burst.
        window = [t for t in allowed if t >= started + 1.0]
        rate = len(window) / (stop_at - (started + 1.0))
        # Each gate alone would allow 40/s: 120/s for the three.
        print(f"fleet rate {rate:.1f}/s")
        assert 32 <= rate <= 48, f"fleet rate {rate:.1f}/s for a 40/s limit ({len(allowed)} allowed in all)"
        assert all_alive(fleet)
    finally:
        fleet.stop()


def test_fleet_quota_and_its_persistence(fleet_dir, upstream, redis):
    fleet = Fleet(fleet_dir, upstream.port, redis.port)
    try:
        created = fleet.master.create_key("--quota", "60/day")
        key = created["key"]
        fleet.start()
        conns = [http.client.HTTPConnection("127.0.0.1", g.port, timeout=5) for g in fleet.gates]
        allowed = 0
        sent = 0
        started = time.time()
        # Paced at about 300 requests a second over the three gates.
        while sent < 240:
            i = sent % 3
            status, _, _ = get(fleet.gates[i], key, conn=conns[i])
            assert status in (200, 429)
            allowed += status == 200
            sent += 1
            time.sleep(0.003)
        elapsed = time.time() - started
        per_gate_per_interval = (sent / 3) / elapsed * 0.1
        # The documented bound: each other gate may allow what it admits in one push and one
        # pull (two sync intervals) before it learns the fleet's count.
        bound = 60 + (3 - 1) * 2 * per_gate_per_interval
        print(f"quota: {allowed} allowed of 60 (bound {bound:.0f})")
        assert 60 <= allowed <= bound, f"{allowed} allowed against a quota of 60 (bound {bound:.0f})"
        time.sleep(0.5)
        assert int(redis.cli("HGET", "keygate:quota:" + time.strftime("%Y-%m-%d", time.gmtime()), created["id"])) >= 60
        shown = json.loads(fleet.master.cli("keys", "show", created["id"], "--json").stdout)
        assert shown["quota_used"] >= 60 and shown["quota_remaining"] == 0
        # Restart every gate with its own state forgotten: the count lives in Redis.
        fleet.stop()
        for g in fleet.gates:
            shutil.rmtree(os.path.join(g.dir, "state"))
            os.makedirs(os.path.join(g.dir, "state"))
        fleet.start()
        time.sleep(0.3)
        for g in fleet.gates:
            status, _, body = get(g, key)
            assert status == 429 and json.loads(body)["error"] == "quota_exceeded"
        assert all_alive(fleet)
    finally:
        fleet.stop()


def test_revocation_reaches_every_gate_within_a_second(fleet_dir, upstream, redis):
    fleet = Fleet(fleet_dir, upstream.port, redis.port)
    try:
        created = fleet.master.create_key()
        key, kid = created["key"], created["id"]
        fleet.start()
        for g in fleet.gates:
            assert get(g, key)[0] == 200
        t0 = time.time()
        fleet.master.cli("keys", "revoke", kid, "--reason", "leaked")
        for g in fleet.gates:
            assert wait_for(lambda: get(g, key)[0] == 401, 1.0 - (time.time() - t0)), "a gate still allowed a revoked key after a second"
            assert json.loads(get(g, key)[2])["error"] == "revoked"
        # Their copies of the store have not changed.
        for g in fleet.gates:
            assert '"status":"active"' in open(os.path.join(g.dir, "keys.jsonl")).read()
        # Disable and enable travel the same way.
        other = fleet.master.create_key()
        fleet.copy_keys()
        assert all(wait_for(lambda: get(g, other["key"])[0] == 200, 3) for g in fleet.gates)
        fleet.master.cli("keys", "disable", other["id"])
        assert all(wait_for(lambda: get(g, other["key"])[0] == 401, 1.0) for g in fleet.gates)
        fleet.master.cli("keys", "enable", other["id"])
        assert all(wait_for(lambda: get(g, other["key"])[0] == 200, 1.0) for g in fleet.gates)
        assert all_alive(fleet)
    finally:
        fleet.stop()


def test_a_gate_that_was_away_replays_revocations(fleet_dir, upstream, redis):
    cutter = Cutter(redis.port)
    fleet = Fleet(fleet_dir, upstream.port, redis.port, redis_ports=[cutter.port, redis.port, redis.port])
    try:
        created = fleet.master.create_key()
        key, kid = created["key"], created["id"]
        fleet.start()
        away = fleet.gates[0]
        assert wait_for(lambda: metric(away, "keygate_cluster_up") == 1, 3)
        cutter.sever()
        assert wait_for(lambda: metric(away, "keygate_cluster_up") == 0, 2)
        fleet.master.cli("keys", "revoke", kid)
        assert wait_for(lambda: get(fleet.gates[1], key)[0] == 401, 1.0)
        # Cut off, the gate cannot know yet: its copy of the store still says active.
        assert get(away, key)[0] == 200
        cutter.restore()
        # Back within its reconnect backoff, it reads what it missed.
        assert wait_for(lambda: get(away, key)[0] == 401, 8), "the revocation was missed while the gate was away"
        assert all_alive(fleet)
    finally:
        fleet.stop()
        cutter.close()


def test_last_used_across_gates(fleet_dir, upstream, redis):
    fleet = Fleet(fleet_dir, upstream.port, redis.port)
    try:
        created = fleet.master.create_key()
        fleet.start()
        assert get(fleet.gates[2], created["key"])[0] == 200

        def listed():
            rows = json.loads(fleet.master.cli("keys", "list", "--json").stdout)
            return [r for r in rows if r["id"] == created["id"]][0].get("last_used")

        # The master host runs no gate: the time comes from the fleet.
        assert wait_for(lambda: listed() is not None, 2.0), "last_used did not reach the other host within two seconds"
        assert listed().startswith(time.strftime("%Y-%m-%d", time.gmtime()))
    finally:
        fleet.stop()


def timed_get(gate, key):
    t = time.time()
    status, headers, body = get(gate, key)
    return status, headers, body, time.time() - t


def test_redis_down_local_enforces_alone(fleet_dir, upstream, redis):
    fleet = Fleet(fleet_dir, upstream.port, redis.port, mode="local", replicas=3)
    try:
        key = fleet.master.create_key("--rate", "300/s")["key"]
        fleet.start()
        g = fleet.gates[0]
        status, headers, _, _ = timed_get(g, key)
        assert status == 200 and headers["ratelimit-limit"] == "300"
        assert wait_for(lambda: ready(g)[0] == 200, 5) and ready(g)[1]["cluster"] == "up"
        # A stalled Redis (stopped, not gone) must not hold requests: they are decided locally.
        os.kill(redis.proc.pid, signal.SIGSTOP)
        try:
            for _ in range(20):
                status, _, _, took = timed_get(g, key)
                assert status == 200 and took < 1.0
                time.sleep(0.05)
            assert wait_for(lambda: metric(g, "keygate_cluster_up") == 0, 3)
        finally:
            os.kill(redis.proc.pid, signal.SIGCONT)
        redis.stop()
        assert wait_for(lambda: metric(g, "keygate_cluster_up") == 0, 3)
        for gate in fleet.gates:
            status, headers, _, took = timed_get(gate, key)
            # Alone, each gate takes its third of the limit.
            assert status == 200 and headers["ratelimit-limit"] == "100" and took < 1.0
        code, body = ready(g)
        assert code == 200 and body["cluster"] == "down" and body["on_redis_down"] == "local"
        # A change made while Redis is away is written, and says it could not be pushed.
        spare = fleet.master.create_key()
        r = fleet.master.cli("keys", "disable", spare["id"])
        assert "warning: the change is in the key store, but other gates were not told" in r.stderr
        assert json.loads(fleet.master.cli("keys", "show", spare["id"], "--json").stdout)["status"] == "disabled"
        redis.start()
        assert wait_for(lambda: metric(g, "keygate_cluster_up") == 1, 8)
        assert get(g, key)[1]["ratelimit-limit"] == "300"
        assert all_alive(fleet)
    finally:
        fleet.stop()


def test_redis_down_deny_answers_503(fleet_dir, upstream, redis):
    fleet = Fleet(fleet_dir, upstream.port, redis.port, mode="deny")
    try:
        key = fleet.master.create_key()["key"]
        fleet.start()
        g = fleet.gates[1]
        assert get(g, key)[0] == 200
        redis.stop()
        assert wait_for(lambda: get(g, key)[0] == 503, 2)
        status, headers, body, took = timed_get(g, key)
        assert status == 503 and json.loads(body)["error"] == "cluster_unavailable" and headers["retry-after"] == "1" and took < 1.0
        # What needs no key, or is refused anyway, is answered as before.
        assert get(g, None, path="/status/204")[0] == 204
        assert get(g, "kg_nope")[0] == 401
        code, body = ready(g)
        assert code == 503 and body["cluster"] == "down" and body["on_redis_down"] == "deny"
        redis.start()
        assert wait_for(lambda: get(g, key)[0] == 200, 8)
        assert wait_for(lambda: ready(g)[0] == 200, 5)
        assert any(e["status"] == 503 and e["reason"] == "cluster_unavailable" for e in g.wait_usage(6))
        assert all_alive(fleet)
    finally:
        fleet.stop()


def test_hostile_counts_in_redis_do_not_bring_a_gate_down(fleet_dir, upstream, redis):
    """Redis is shared: another tool, an old gate or a hand-typed HSET may leave anything in
    keygate's hashes. Numbers at the ends of the 64-bit range, negative counts and words must
    neither crash a gate nor lift a limit."""
    fleet = Fleet(fleet_dir, upstream.port, redis.port)
    try:
        created = fleet.master.create_key("--rate", "1000/s", "--quota", "50/day")
        key, kid = created["key"], created["id"]
        fleet.start()
        for g in fleet.gates:
            assert get(g, key)[0] == 200
        day = "keygate:quota:" + time.strftime("%Y-%m-%d", time.gmtime())
        month = "keygate:quota:" + time.strftime("%Y-%m", time.gmtime())
        time.sleep(0.3)
        for value in ["9223372036854775807", "-9223372036854775808", "-5", "lots", "9223372036854775806", "0"]:
            redis.cli("HSET", "keygate:rate", kid, value)
            redis.cli("HSET", day, kid, value)
            redis.cli("HSET", month, kid, value)
            redis.cli("HSET", "keygate:last_used", kid, value)
            time.sleep(0.3)
            for g in fleet.gates:
                status, _, _ = get(g, key)
                assert status in (200, 429), f"{status} with {value} in Redis"
            assert all_alive(fleet), f"a gate died with {value} in Redis"
            # The CLI reads the same hashes for last use and quota.
            for args in (("keys", "list", "--json"), ("keys", "show", kid, "--json")):
                r = fleet.master.cli(*args, check=False)
                assert r.returncode == 0, f"{' '.join(args)} with {value} in Redis: {r.stderr[-300:]}"
        # A quota count at the top of the range is an exhausted quota, not a wrapped one.
        redis.cli("HSET", day, kid, "9223372036854775807")
        for g in fleet.gates:
            assert wait_for(lambda: get(g, key)[0] == 429, 2)
        shown = fleet.master.cli("keys", "show", kid, "--json")
        assert shown.returncode == 0 and json.loads(shown.stdout)["quota_remaining"] == 0
        assert fleet.master.cli("keys", "list", "--json").returncode == 0
        assert all_alive(fleet)
    finally:
        fleet.stop()


def reloads(gate):
    return metric(gate, 'keygate_reloads_total{result="ok"}')


def copy_and_wait(fleet):
    """Copies the master store to every gate and waits until each has reloaded it."""
    before = [reloads(g) for g in fleet.gates]
    fleet.copy_keys()
    assert all(wait_for(lambda: reloads(g) > b, 5) for g, b in zip(fleet.gates, before))


def test_a_change_redis_missed_arrives_with_the_store_copy(fleet_dir, upstream, redis):
    """A pushed change stands until the gate's copy of the store has caught up with it; a later
    change made while Redis was away then arrives with the copy, as the CLI's warning says."""
    fleet = Fleet(fleet_dir, upstream.port, redis.port)
    try:
        first, second = fleet.master.create_key(), fleet.master.create_key()
        fleet.start()
        fleet.master.cli("keys", "disable", first["id"])
        assert all(wait_for(lambda: get(g, first["key"])[0] == 401, 1.0) for g in fleet.gates)
        # The copies catch up with the first disable only.
        copy_and_wait(fleet)
        fleet.master.cli("keys", "disable", second["id"])
        assert all(wait_for(lambda: get(g, second["key"])[0] == 401, 1.0) for g in fleet.gates)
        redis.stop()
        r = fleet.master.cli("keys", "enable", first["id"])
        assert "other gates were not told" in r.stderr
        # The second key's enable comes in a later second than its disable, and its copy
        # never showed it disabled: the record's updated_at says the copy is newer.
        time.sleep(1.05 - time.time() % 1)
        fleet.master.cli("keys", "enable", second["id"])
        copy_and_wait(fleet)
        for g in fleet.gates:
            for k in (first, second):
                assert get(g, k["key"])[0] == 200, "a gate kept a pushed disable over a newer copy of the store"
        # A revoke pushed before the copy arrives stays in force, and stays after it.
        redis.start()
        assert all(wait_for(lambda: metric(g, "keygate_cluster_up") == 1, 8) for g in fleet.gates)
        fleet.master.cli("keys", "revoke", first["id"])
        assert all(wait_for(lambda: get(g, first["key"])[0] == 401, 1.0) for g in fleet.gates)
        copy_and_wait(fleet)
        assert all(get(g, first["key"])[0] == 401 for g in fleet.gates)
        assert all_alive(fleet)
    finally:
        fleet.stop()


def test_a_pushed_revocation_closes_tunnels_on_every_gate(fleet_dir, upstream, redis):
    from conftest import assert_closed_for_its_key, ws_open
    from upstream import ws_frame, ws_read_frame
    fleet = Fleet(fleet_dir, upstream.port, redis.port)
    try:
        created = fleet.master.create_key()
        fleet.start()
        tunnels = []
        for g in fleet.gates:
            s, reader, status, _ = ws_open(g, "/ws", created["key"])
            assert status == 101
            s.sendall(ws_frame(0x1, b"hello", mask=True))
            assert ws_read_frame(reader) == (0x1, b"hello")
            tunnels.append((s, reader))
        t0 = time.time()
        fleet.master.cli("keys", "revoke", created["id"])
        for s, reader in tunnels:
            assert_closed_for_its_key(s, reader)
            s.close()
        assert time.time() - t0 < 1.5, f"the last tunnel closed {time.time() - t0:.2f} s after the revoke"
        assert all_alive(fleet)
    finally:
        fleet.stop()
