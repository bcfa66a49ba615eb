"""Hardening figures: slowloris against a normal client's p99, slowhttptest's slow-body and
slow-read attacks (100 and 1,000 connections), 100 reloads under wrk, and SIGTERM under load with
every answer checked for truncation. Figures only."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests/integration"))
from conftest import Gate, wait_port  # noqa: E402


def wrk(port, key, seconds, conns=64):
    script = os.path.join(ROOT, "bench/single.lua")
    with open(script, "w") as f:
        f.write(f'request = function() return wrk.format("GET", "/", {{["x-api-key"] = "{key}"}}) end\n')
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", script, f"http://127.0.0.1:{port}"],
                         capture_output=True, text=True).stdout
    os.unlink(script)
    p99 = re.search(r"\s99%\s+(\S+)", out).group(1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p99": p99, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "errors": errors.group(1) if errors else "none"}


def slowloris(port, count, stop):
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\n")
        socks.append(s)
    while not stop.is_set():
        for s in socks:
            try:
                s.sendall(b"X")  # one byte a second each: never a whole head
            except OSError:
                pass
        time.sleep(1)
    for s in socks:
        s.close()


def metrics(port):
    import urllib.request
    out = {}
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def slowhttptest(g, key, mode, conns, folder):
    """One slowhttptest attack on a public route while a normal client measures its p99.
    Reports when the attackers' connections were closed, the most upstream connections they
    held, and slowhttptest's own verdict on availability."""
    if mode == "body":
        args = ["-B", "-i", "9", "-s", "8192", "-t", "POST", "-u", f"http://127.0.0.1:{g.port}/"]
    else:
        args = ["-X", "-w", "1", "-y", "16", "-n", "2", "-z", "16", "-k", "1", "-u", f"http://127.0.0.1:{g.port}/big"]
    proc = subprocess.Popen(["slowhttptest", *args, "-c", str(conns), "-r", "500", "-l", "40", "-p", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=folder)
    start = time.time()
    samples = []
    normal = {}
    # The normal client starts after the attackers connected: the first seconds show what the
    # attackers alone hold upstream.
    load = threading.Thread(target=lambda: normal.update(wrk(g.port, key, 15, conns=16)))
    load_started = False
    before = metrics(g.admin_port)
    ended = None
    while time.time() - start < 70:
        if ended is None and proc.poll() is not None:
            ended = time.time() - start
        if ended is not None and time.time() - start > ended + 1 and (not load_started or not load.is_alive()):
            break
        m = metrics(g.admin_port)
        samples.append((time.time() - start, m.get("keygate_connections_open", 0), m.get("keygate_upstream_connections_in_use", 0)))
        if not load_started and time.time() - start > 3:
            load.start()
            load_started = True
        time.sleep(0.25)
    if proc.poll() is None:
        proc.kill()
    out = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", proc.communicate()[0])
    if load_started:
        load.join()
    after = metrics(g.admin_port)
    kinds = ["body_total", "body_rate", "send"]
    timeouts = {k: int(after.get(f'keygate_timeouts_total{{kind="{k}"}}', 0) - before.get(f'keygate_timeouts_total{{kind="{k}"}}', 0)) for k in kinds}
    peak = max((c for _, c, _ in samples), default=0)
    attack_only = [u for t, _, u in samples if t < 3]
    held = max(attack_only, default=0)
    verdict = re.findall(r"service available:\s+(\w+)", out)
    ended_text = re.findall(r"Test ended on (\d+)\w* second", out)
    status = re.findall(r"Exit status:\s*(.*)", out)
    print(f"slow {mode}, {conns} connections: peak {peak:.0f} client connections open; "
          f"{'slowhttptest ended at %ss (%s)' % (ended_text[-1], status[-1].strip()) if ended_text else 'slowhttptest ran to its end'}; "
          f"timeouts {timeouts}; upstream connections the attackers held: at most {held:.0f}; "
          f"service available (slowhttptest's probe): {verdict[-1] if verdict else '?'}; "
          f"normal client beside them: p99 {normal.get('p99', '?')}, {normal.get('rps', 0):.0f} req/s, non-2xx {normal.get('non2xx', '?')}")


def nginx_upstream(folder):
    """nginx from apt: 100 bytes at /, 256 KiB at /big (Python would be the bottleneck here)."""
    from conftest import free_port
    port = free_port()
    os.chmod(folder, 0o755)  # nginx's workers run as another user
    with open(os.path.join(folder, "big.bin"), "wb") as f:
        f.write(os.urandom(262144))
    os.chmod(os.path.join(folder, "big.bin"), 0o644)
    conf = os.path.join(folder, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1; pid {folder}/nginx.pid; error_log {folder}/nginx.err;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 100000; server {{ listen 127.0.0.1:{port};
  location = / {{ return 200 "{'x' * 100}"; }}
  location = /big {{ alias {folder}/big.bin; }} }} }}
""")
    proc = subprocess.Popen(["nginx", "-c", conf, "-g", "daemon off;"])
    wait_port(port)
    return proc, port


def main():
    import tempfile
    folder = tempfile.mkdtemp(prefix="keygate-hardening-")
    up, up_port = nginx_upstream(folder)
    # "/" and "/big" are public, as slowhttptest cannot send a key: its requests reach the
    # body and response phases the attacks aim at.
    g = Gate(folder, up_port, extra="limits: { max_connections: 5000 }\n", public_routes='["* /", "GET /big"]')
    key = g.create_key()["key"]
    g.start()
    try:
        base = wrk(g.port, key, 8)
        stop = threading.Event()
        t = threading.Thread(target=slowloris, args=(g.port, 1000, stop))
        t.start()
        time.sleep(2)
        loris = wrk(g.port, key, 8)
        stop.set()
        t.join()
        print(f"slowloris: normal client p99 {base['p99']} alone, {loris['p99']} beside 1,000 slowloris connections "
              f"({base['rps']:.0f} → {loris['rps']:.0f} req/s)")

        if shutil.which("slowhttptest"):
            alone = wrk(g.port, key, 5, conns=16)
            print(f"normal client alone (16 connections): p99 {alone['p99']}, {alone['rps']:.0f} req/s")
            for mode in ("body", "read"):
                for conns in (100, 1000):
                    slowhttptest(g, key, mode, conns, folder)
        else:
            print("slowhttptest not installed (apt-get install slowhttptest): slow-body and slow-read figures skipped")

        result = {}
        th = threading.Thread(target=lambda: result.update(wrk(g.port, key, 20)))
        th.start()
        time.sleep(1)
        for i in range(100):
            g.proc.send_signal(signal.SIGHUP)
            time.sleep(0.15)
        th.join()
        err = open(g.stderr_path).read()
        print(f"100 SIGHUP reloads during wrk: {len(re.findall('reload .SIGHUP.', err))} reloads logged, non-2xx {result['non2xx']}, "
              f"socket errors {result['errors']}")

        # SIGTERM under load: 16 clients fetch 256 KiB answers; every answer must be whole or absent.
        complete = [0]
        truncated = [0]
        refused = [0]
        lock = threading.Lock()

        def fetch():
            while True:
                try:
                    s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
                except OSError:
                    with lock:
                        refused[0] += 1
                    return
                s.sendall(f"GET /big HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n\r\n".encode())
                data = b""
                try:
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                        head, _, body = data.partition(b"\r\n\r\n")
                        if b"Content-Length: 262144" in head and len(body) >= 262144:
                            break
                except OSError:
                    pass
                s.close()
                head, _, body = data.partition(b"\r\n\r\n")
                with lock:
                    if not data:
                        refused[0] += 1
                        return
                    if len(body) == 262144:
                        complete[0] += 1
                    else:
                        truncated[0] += 1

        clients = [threading.Thread(target=fetch) for _ in range(16)]
        for c in clients:
            c.start()
        time.sleep(2)
        g.proc.send_signal(signal.SIGTERM)
        code = g.proc.wait(timeout=40)
        for c in clients:
            c.join()
        print(f"SIGTERM under load: exit {code}; {complete[0]} complete answers, {truncated[0]} truncated, "
              f"{refused[0]} clients refused after the listener closed")
    finally:
        g.stop()
        up.send_signal(signal.SIGTERM)
        up.wait()


if __name__ == "__main__":
    main()
