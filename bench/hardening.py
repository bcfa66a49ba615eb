"""Hardening figures: slowloris against a normal client's p99, 100 reloads under wrk, and SIGTERM
under load with every answer checked for truncation. Figures only."""
import os
import re
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
    g = Gate(folder, up_port, extra="limits: { max_connections: 5000 }\n")
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
