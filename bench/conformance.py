"""make conformance: the HTTP fixtures replayed to keygate and to nginx (from apt) as a plain
reverse proxy in front of the same upstream; lists where keygate is stricter. Figures only."""
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests/integration"))
from conftest import Gate, free_port, raw_exchange, wait_port  # noqa: E402
from test_fixtures import fixtures  # noqa: E402
from upstream import Upstream  # noqa: E402


def status(out):
    return int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/1.") else 0


def main():
    up = Upstream()
    tmp = tempfile.mkdtemp(prefix="keygate-conformance-")
    gate = Gate(tmp, up.port)
    key = gate.create_key()["key"]
    gate.start()
    ng_port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err;
events {{}}
http {{ access_log off; server {{ listen 127.0.0.1:{ng_port}; location / {{ proxy_pass http://127.0.0.1:{up.port}; proxy_http_version 1.1; }} }} }}
""")
    nginx = subprocess.Popen(["nginx", "-c", conf, "-g", "daemon off;"])
    wait_port(ng_port)
    stricter = []
    print(f"{'fixture':32}{'expect':>7}{'keygate':>9}{'nginx':>7}")
    try:
        for name, expect, raw in fixtures():
            raw = raw.replace(b"Host: x\r\n", b"Host: x\r\nx-api-key: " + key.encode() + b"\r\n", 1)
            k = status(raw_exchange(gate.port, raw, read_timeout=2.0))
            n = status(raw_exchange(ng_port, raw, read_timeout=2.0))
            note = ""
            if k >= 400 and (n < 400 or n == 0):
                note = "keygate stricter"
                stricter.append(name)
            elif k != expect:
                note = "UNEXPECTED"
            print(f"{name:32}{expect:>7}{k:>9}{n:>7}  {note}")
        print(f"\nkeygate refused {len(stricter)} fixtures that nginx forwarded or answered: {', '.join(stricter)}")
    finally:
        nginx.send_signal(signal.SIGTERM)
        nginx.wait()
        gate.stop()
        up.stop()


if __name__ == "__main__":
    main()
