"""Instructions per request, a figure a noisy machine cannot blur: keygate (one loop) and the
nginx gate (one worker, no master) run under callgrind; instrumentation is switched on after a
warm-up, a fixed number of requests is sent on keep-alive connections, and the instructions the
server executed are divided by that number. Also counts the calls to malloc per request. Each figure is the median of five windows.
Prints figures; asserts nothing.

    python3 bench/instructions.py [--requests 2000]
"""
import argparse
import glob
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench  # noqa: E402


def send(port, requests, keys, valid=True, connections=4):
    """`requests` GETs of / spread over keep-alive connections, each answer read whole."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(connections)]
    files = [s.makefile("rb") for s in socks]
    for i in range(requests):
        s, f = socks[i % connections], files[i % connections]
        key = keys[i % len(keys)][1] if valid else "kg_AAAAAAAA_" + "B" * 32 + "CCCCCC"
        s.sendall(f"GET / HTTP/1.1\r\nHost: bench\r\nx-api-key: {key}\r\nX-Forwarded-For: {bench.CLIENT_IP}\r\n\r\n".encode())
        f.readline()
        length = 0
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        f.read(length)
    for s in socks:
        s.close()


def control(pid, *args):
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, timeout=60)


def measure(name, pid, port, keys, requests, folder, windows=5):
    """Runs both scenarios against a server already under callgrind. Each scenario is counted in
    `windows` separate windows and the median window is the figure: keygate writes
    keys.state.json every five seconds off the loops, negligible per request in real traffic
    but a large, random share of a slow callgrind window, and a median leaves out the window it
    falls in."""
    out = {}
    send(port, 200, keys)  # warm-up, uncounted
    send(port, 200, keys, valid=False)
    control(pid, "-i", "on")
    per_window = max(requests // windows, 1)
    for scenario, valid in (("allowed-100B", True), ("denied-401", False)):
        figures = []
        for w in range(windows):
            control(pid, "-z")
            send(port, per_window, keys, valid)
            control(pid, "-d", f"{scenario}-{w}")
            time.sleep(0.5)
            dumps = sorted(glob.glob(os.path.join(folder, f"{name}.callgrind*")), key=os.path.getmtime)
            text = open(dumps[-1]).read()
            total = int(re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M).group(1))
            # The key-state write's own instructions are left out of every window as well.
            annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", dumps[-1]], capture_output=True, text=True).stdout
            flush = re.search(r"^\s*([\d,]+) .*KeyStateFlusherC5flushyyF", annotated, re.M)
            if flush:
                total -= int(flush.group(1).replace(",", ""))
            mallocs = 0
            # Names are compressed: "(12) malloc" once, "(12)" after; either fn= or cfn= may name it.
            ids = set(re.findall(r"^c?fn=\((\d+)\) malloc$", text, re.M))
            for m in re.finditer(r"^cfn=\((\d+)\)(?: [^\n]*)?\ncalls=(\d+)", text, re.M):
                if m.group(1) in ids:
                    mallocs += int(m.group(2))
            figures.append((total / per_window, mallocs / per_window))
        out[scenario] = (statistics.median(f[0] for f in figures), statistics.median(f[1] for f in figures))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--keygate", default=os.path.join(ROOT, ".build/release/keygate"), help="the keygate binary to measure")
    args = ap.parse_args()
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        print("valgrind is not installed (apt-get install valgrind): no instruction counts")
        return
    folder = os.path.join(ROOT, "bench-out", "instructions")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    # Valgrind's reader does not know the DWARF 5 the Swift toolchain writes: a copy without
    # debug information still has every symbol.
    keygate = os.path.join(folder, "keygate")
    subprocess.run(["objcopy", "--strip-debug", args.keygate, keygate], check=True)
    keys = bench.write_keys(folder, 1000)
    with open(os.path.join(folder, "nginx-keys.map"), "w") as f:
        for kid, key in keys:
            f.write(f'"{key}" "{kid}";\n')
    up_port, kg_port, ng_port = 18011, 18012, 18013
    with open(os.path.join(folder, "upstream.conf"), "w") as f:
        f.write(bench.NGINX_UPSTREAM.format(dir=folder, port=up_port, small="x" * 100))
    with open(os.path.join(folder, "gate.conf"), "w") as f:
        # One worker and no master, so the one process under callgrind does all the work.
        f.write("master_process off;\n" + bench.nginx_gate(folder, ng_port, up_port, workers=1))
    with open(os.path.join(folder, "keygate.yaml"), "w") as f:
        f.write(f'listen: "127.0.0.1:{kg_port}"\nupstream: "http://127.0.0.1:{up_port}"\nadmin_listen: off\nworkers: 1\n'
                f'keys_file: keys.jsonl\nusage_log: usage.jsonl\n' + bench.write_policy(folder))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    procs = [subprocess.Popen([nginx, "-c", os.path.join(folder, "upstream.conf"), "-g", "daemon off;"])]
    grind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no"]
    try:
        kg = subprocess.Popen(grind + [f"--callgrind-out-file={folder}/keygate.callgrind", keygate, "serve", "--config",
                                       os.path.join(folder, "keygate.yaml")], stderr=subprocess.DEVNULL)
        procs.append(kg)
        ng = subprocess.Popen(grind + [f"--callgrind-out-file={folder}/nginx.callgrind", nginx, "-c", os.path.join(folder, "gate.conf"), "-g",
                                       "daemon off;"], stderr=subprocess.DEVNULL)
        procs.append(ng)
        for p in (up_port, kg_port, ng_port):
            bench.wait_port(p, timeout=60)
        results = {"keygate": measure("keygate", kg.pid, kg_port, keys, args.requests, folder),
                   "nginx": measure("nginx", ng.pid, ng_port, keys, args.requests, folder)}
        print(f"instructions per request (callgrind, {args.requests} requests on 4 keep-alive connections after a warm-up, "
              f"median of 5 windows):")
        for scenario in ("allowed-100B", "denied-401"):
            k, n = results["keygate"][scenario], results["nginx"][scenario]
            print(f"  {scenario:13} keygate {k[0]:9.0f} instr, {k[1]:5.1f} mallocs;  nginx {n[0]:9.0f} instr, {n[1]:5.1f} mallocs;  "
                  f"keygate/nginx {k[0] / n[0]:.2f}")
    finally:
        bench.stop(procs, timeout=30)


if __name__ == "__main__":
    main()
