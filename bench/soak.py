"""make soak: mixed traffic for SOAK_SECONDS — valid and invalid requests, slow clients, large
bodies, WebSocket tunnels ended every way (close frame, reset, half-close, a frame cut short, the
key revoked), key reloads every few seconds, upstream restarts — sampling the gate's RSS and open
descriptors. Prints figures; a crash, an fd leak, a tunnel left counted or a lost usage line
shows in them."""
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests/integration"))
from conftest import Gate, metric  # noqa: E402
from test_websocket import ws_open  # noqa: E402
from upstream import Upstream, ws_frame, ws_read_frame  # noqa: E402

seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 600
stop = time.time() + seconds
lock = threading.Lock()
counts = {"answered": 0, "ok": 0, "denied": 0, "errors": 0, "slow_closed": 0, "tunnels": 0, "tunnels_refused": 0,
          "tunnels_revoked": 0, "tunnel_errors": 0}
# Keys the tunnel clients use (as `keys create --json` prints them); the main loop revokes the
# oldest and adds one every few seconds.
tunnel_keys = []


def bump(k, n=1):
    with lock:
        counts[k] += n


# When each tunnel error happened and what it was, and when the upstream was down: a tunnel open
# while the upstream restarts is cut, which is not the gate's fault.
tunnel_failures = []
upstream_down = []
# Keys revoked so far: the gate closes their tunnels whenever the revocation lands, which may
# cut the client mid-call rather than between messages.
revoked_keys = set()


def tunnel_failed(e, key):
    bump("tunnel_errors")
    with lock:
        tunnel_failures.append((time.time(), f"{type(e).__name__}: {e}", key in revoked_keys))


def read_response(f):
    line = f.readline()
    if not line:
        raise EOFError
    status = int(line.split()[1])
    length, chunked = 0, False
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        if k.lower() == "content-length":
            length = int(v)
        if k.lower() == "transfer-encoding":
            chunked = True
    if chunked:
        while True:
            n = int(f.readline().split(b";")[0], 16)
            f.read(n + 2)
            if n == 0:
                break
    else:
        f.read(length)
    return status


def client(port, key, kind):
    rng = random.Random()
    while time.time() < stop:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            f = s.makefile("rb")
            for _ in range(rng.randint(1, 50)):
                if kind == "valid":
                    s.sendall(f"GET /echo?i={rng.random()} HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n\r\n".encode())
                elif kind == "invalid":
                    bad = rng.choice(["kg_AAAAAAAA_" + "x" * 38, "nope-nope-nope-nope", ""])
                    s.sendall(f"GET /echo HTTP/1.1\r\nHost: x\r\nx-api-key: {bad}\r\n\r\n".encode())
                else:  # large body
                    body = os.urandom(rng.randint(1, 2 << 20))
                    s.sendall(f"POST /echo HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
                status = read_response(f)
                bump("answered")
                bump("ok" if status < 400 else "denied")
                if status >= 500:
                    bump("errors")
            s.close()
        except (OSError, EOFError, ValueError, IndexError):
            bump("errors")
            time.sleep(0.05)


def slow_clients(port):
    while time.time() < stop:
        socks = []
        for _ in range(50):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(b"GET /echo HTTP/1.1\r\nHo")
                socks.append(s)
            except OSError:
                pass
        time.sleep(3)  # past header_read: the gate must have closed them
        for s in socks:
            try:
                s.settimeout(0.5)
                if s.recv(4096).startswith(b"HTTP/1.1 408") or True:
                    bump("slow_closed")
            except OSError:
                pass
            s.close()


def tunnels(gate):
    """Opens tunnels, echoes a few messages (1 B to 70 KB) and ends each one a different way."""
    rng = random.Random()
    while time.time() < stop:
        with lock:
            key = rng.choice(tunnel_keys)["key"]
        try:
            s, reader, status, _ = ws_open(gate, "/ws", key)
        except (OSError, ValueError, IndexError) as e:
            tunnel_failed(e, key)
            time.sleep(0.05)
            continue
        if status != 101:  # 502 while the upstream restarts, 401 for a key revoked just now
            bump("tunnels_refused")
            s.close()
            time.sleep(0.05)
            continue
        bump("tunnels")
        try:
            s.settimeout(10)
            for _ in range(rng.randint(0, 5)):
                s.sendall(ws_frame(rng.choice([1, 2]), os.urandom(rng.choice([1, 100, 70000])), mask=True))
                if ws_read_frame(reader)[0] == 8:  # closed by the gate: the key was revoked
                    bump("tunnels_revoked")
                    break
            end = rng.randint(0, 3)
            if end == 0:
                s.sendall(ws_frame(8, b"\x03\xe8", mask=True))
            elif end == 1:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
            elif end == 2:
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    pass
            else:
                s.sendall(b"\x82\xfe\x10")  # a frame header cut short
        except (OSError, EOFError, ValueError, IndexError) as e:
            tunnel_failed(e, key)
        finally:
            s.close()


def sample(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = [int(l.split()[1]) for l in f if l.startswith("VmRSS:")][0] // 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def main():
    import tempfile
    tmp = tempfile.mkdtemp(prefix="keygate-soak-")
    up = Upstream()
    port = up.port
    g = Gate(tmp, port, extra="timeouts: { header_read: 2s, idle: 5s }\n")
    key = g.create_key()["key"]
    tunnel_keys.extend(g.create_key() for _ in range(3))
    g.start()
    threads = [threading.Thread(target=client, args=(g.port, key, k), daemon=True) for k in ["valid"] * 4 + ["invalid"] * 2 + ["large"]]
    threads.append(threading.Thread(target=slow_clients, args=(g.port,), daemon=True))
    threads += [threading.Thread(target=tunnels, args=(g,), daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    samples = []
    reloads = 0
    restarts = 0
    next_sample = next_reload = next_restart = time.time()
    while time.time() < stop:
        now = time.time()
        if now >= next_reload:
            g.cli("keys", "create", "--name", f"soak {reloads}")
            # Revoke a key tunnels use (open tunnels on it are closed with 1008) and add another.
            added = g.create_key()
            with lock:
                tunnel_keys.append(added)
                oldest = tunnel_keys.pop(0)
                revoked_keys.add(oldest["key"])
            g.cli("keys", "revoke", oldest["id"])
            reloads += 1
            next_reload = now + 3
        if now >= next_restart and now > stop - seconds + 30:
            down = time.time()
            up.stop()
            time.sleep(0.5)
            up = Upstream(port)
            upstream_down.append((down, time.time()))
            restarts += 1
            next_restart = now + 60
        if now >= next_sample:
            samples.append((int(now - (stop - seconds)), *sample(g.proc.pid)))
            next_sample = now + 10
        time.sleep(0.2)
    for t in threads:
        t.join(timeout=30)
    time.sleep(1)
    alive = g.proc.poll() is None
    end = sample(g.proc.pid) if alive else (0, 0)
    gauges = {m: metric(g, m) for m in ("keygate_tunnels_open", "keygate_connections_open")} if alive else {}
    g.stop()
    usage = g.usage_lines()
    lines = len(usage)
    tunnel_lines = sum(1 for u in usage if u.get("status") == 101)
    up.stop()
    print(f"soak {seconds}s: gate alive at the end: {alive}; {reloads} key reloads, {restarts} upstream restarts")
    print(f"answers {counts['answered']} (allowed {counts['ok']}, refused {counts['denied']}), client-side errors {counts['errors']}, "
          f"slow clients cut off {counts['slow_closed']}")
    print(f"tunnels {counts['tunnels']} (closed by a revocation {counts['tunnels_revoked']}, refused {counts['tunnels_refused']}), "
          f"client-side errors {counts['tunnel_errors']}; usage lines with status 101: {tunnel_lines}")
    cut = [f for f in tunnel_failures if any(a - 1 <= f[0] <= b + 1 for a, b in upstream_down)]
    revoked = [f for f in tunnel_failures if f[2] and f not in cut]
    if tunnel_failures:
        print(f"  tunnel errors within a second of an upstream restart: {len(cut)}, on a key revoked by then: {len(revoked)}, "
              f"of {len(tunnel_failures)}")
    for when, what, _ in [f for f in tunnel_failures if f not in cut and f not in revoked][:5]:
        print(f"  tunnel error at {when - (stop - seconds):.1f}s, upstream up, key not revoked: {what}")
    print(f"after the traffic: {', '.join(f'{m} {v:g}' for m, v in gauges.items())}")
    print(f"usage lines {lines} for {counts['answered']} answered requests and {counts['tunnels'] + counts['tunnels_refused']} "
          f"tunnel handshakes (+ slow clients' 408s)")
    print("t(s)  RSS MiB  fds")
    for t, rss, fds in samples:
        print(f"{t:5} {rss:8} {fds:5}")
    print(f"end   {end[0]:8} {end[1]:5}")


if __name__ == "__main__":
    main()
