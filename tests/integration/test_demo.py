"""`keygate demo` (what `make demo` runs): the printed curl lines work, and so does the console
sign-in it prints."""
import os
import re
import signal
import subprocess
import time

from conftest import KEYGATE, curl, free_port, wait_port
from console_client import ConsoleClient


def test_demo_prints_lines_that_work(tmp_path):
    ports = [free_port() for _ in range(4)]
    out = open(os.path.join(tmp_path, "out.txt"), "w+")
    p = subprocess.Popen([KEYGATE, "demo", "--dir", str(tmp_path / "demo"), "--port", str(ports[0]), "--upstream-port", str(ports[1]),
                          "--admin-port", str(ports[2]), "--console-port", str(ports[3])], stdout=out, stderr=subprocess.DEVNULL)
    try:
        assert wait_port(ports[0]) and wait_port(ports[3])
        deadline = time.time() + 5
        while "Ctrl-C" not in open(out.name).read() and time.time() < deadline:
            time.sleep(0.05)
        text = open(out.name).read()
        base = f"http://127.0.0.1:{ports[0]}"
        key = re.search(r"x-api-key: (kg_\w+)' " + re.escape(base), text).group(1)
        read_key = re.search(r"Bearer (kg_\w+)", text).group(1)
        assert curl(base + "/suppliers")[0] == 401
        assert curl("-H", f"x-api-key: {key}", base + "/suppliers")[0] == 200
        assert curl("-H", f"Authorization: Bearer {read_key}", base + "/suppliers/42")[0] == 200
        assert curl("-H", f"Authorization: Bearer {read_key}", "-X", "POST", base + "/suppliers")[0] == 403
        password = re.search(r"user demo, password (\w+)", text).group(1)
        c = ConsoleClient(ports[3])
        assert c.login("demo", password)[0] == 200
        assert len(c.request("GET", "/api/keys")[2]) == 2
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=15)
