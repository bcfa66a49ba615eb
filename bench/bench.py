"""keygate vs an nginx gate doing the same job, on one machine, in one run.

Starts an nginx upstream (~100 B at /, 64 KiB at /big), keygate holding N keys, and nginx set
up as the equivalent gate, both enforcing the same policy (client address from X-Forwarded-For
of a trusted peer, a 1,000-CIDR allowlist, a GeoIP country deny, the key from x-api-key or a
Bearer token, key header removed, X-Key-Id added, keep-alive upstream pool, JSON access log). wrk with a key-rotating script hits the direct
upstream, keygate and nginx in turn, several rounds, and prints req/s, p50/p99 and CPU µs per
request, with the keygate/nginx ratios. Prints figures only; asserts nothing.
"""
import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def b62(v, width):
    out = []
    for _ in range(width):
        out.append(ALPHABET[v % 62])
        v //= 62
    return "".join(reversed(out))


def make_key(prefix="kg"):
    kid = "".join(secrets.choice(ALPHABET) for _ in range(8))
    body = f"{prefix}_{kid}_" + "".join(secrets.choice(ALPHABET) for _ in range(32))
    return kid, body + b62(zlib.crc32(body.encode()), 6)


def write_keys(folder, n, rate=None):
    keys = []
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with open(os.path.join(folder, "keys.jsonl"), "w") as f:
        for i in range(n):
            kid, key = make_key()
            keys.append((kid, key))
            rec = {"id": kid, "name": f"bench {i}", "owner": "bench", "hash": "sha256:" + hashlib.sha256(key.encode()).hexdigest(),
                   "scopes": [], "allow_ips": [], "countries": {"allow": [], "deny": []}, "status": "active", "created_at": now, "updated_at": now}
            if rate:
                rec["rate"] = rate
                rec["burst"] = 1000
            f.write(json.dumps(rec, sort_keys=True) + "\n")
    with open(os.path.join(folder, "keys.txt"), "w") as f:
        f.write("\n".join(k for _, k in keys) + "\n")
    return keys


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except FileNotFoundError:
            pass
    return total


def machine_ticks():
    """(steal, total) ticks of the whole machine from /proc/stat: steal is the time the
    hypervisor gave this VM's cores to someone else."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[7], sum(v)


# A run whose machine lost more than this share of its time to steal measured the host's
# neighbours as much as the gate; the echo's figures are also given over the rounds below it.
STEAL_LIMIT = 0.02


def children(pid):
    out = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            out += [int(x) for x in f.read().split()]
    except FileNotFoundError:
        pass
    return out


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def parse_wrk(text):
    def dur(s):
        m = re.match(r"([\d.]+)(us|ms|s)", s)
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    total = int(re.search(r"(\d+) requests in", text).group(1))
    p50 = dur(re.search(r"\s50%\s+(\S+)", text).group(1))
    p99 = dur(re.search(r"\s99%\s+(\S+)", text).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: (.*)", text)
    return {"rps": rps, "requests": total, "p50": p50, "p99": p99, "non2xx": int(errors.group(1)) if errors else 0, "socket_errors": sock.group(1) if sock else ""}


def run_wrk(url, keys_file, path, seconds, connections, pids, body=0, close=False):
    env = dict(os.environ, BENCH_KEYS=keys_file, BENCH_PATH=path, BENCH_BODY=str(body), BENCH_CLOSE="1" if close else "0",
               BENCH_CLIENT_IP=CLIENT_IP)
    before = cpu_ticks(pids)
    r = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", os.path.join(ROOT, "bench/rotate.lua"), url],
                       capture_output=True, text=True, env=env)
    after = cpu_ticks(pids)
    res = parse_wrk(r.stdout)
    res["cpu_us"] = (after - before) / CLK_TCK * 1e6 / max(res["requests"], 1) if pids else 0.0
    return res


# keygate's event loops in the bench (`--workers`). On this 2-core machine the gate shares the
# cores with wrk and the upstream; one loop measured better than two (docs/performance.md).
WORKERS = "1"


def keygate_policy(out, port, admin_port, upstream_port, usage, workers=None):
    """The bench policy: WORKERS loops, the bench keys, PORT in front of UPSTREAM_PORT, and the
    policy the nginx gates apply too (`write_policy`, run once per bench folder)."""
    with open(os.path.join(out, "policy.yaml")) as f:
        policy = f.read()
    return (f'listen: "127.0.0.1:{port}"\nupstream: "http://127.0.0.1:{upstream_port}"\nadmin_listen: "127.0.0.1:{admin_port}"\n'
            f'workers: {workers or WORKERS}\nkeys_file: keys.jsonl\nusage_log: {usage}\n' + policy)


def rotated(names, rnd):
    """The targets in round `rnd`'s order: each round starts one further along, so no gate always
    runs first (on a warm or a cold machine)."""
    shift = rnd % len(names)
    return names[shift:] + names[:shift]


def start_keygate(binary, out, name, port, admin_port, upstream_port, usage, procs, extra="", workers=None):
    """Writes `out/NAME.yaml` (the bench policy plus EXTRA) and starts BINARY on it; returns the
    process once it listens."""
    with open(os.path.join(out, f"{name}.yaml"), "w") as f:
        f.write(keygate_policy(out, port, admin_port, upstream_port, usage, workers) + extra)
    p = subprocess.Popen([binary, "serve", "--config", os.path.join(out, f"{name}.yaml")], stderr=open(os.path.join(out, f"{name}.err"), "w"))
    procs.append(p)
    wait_port(port)
    return p


NGINX_UPSTREAM = """
worker_processes 1;
pid {dir}/upstream.pid;
error_log {dir}/upstream.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location = / {{ return 200 "{small}"; }}
    location = /big {{ alias {dir}/big.bin; default_type application/octet-stream; }}
  }}
}}
"""

# The key lookup every nginx gate shares: the bench keys as a map, "" for any other.
NGINX_KEY_MAP = """  map $presented_key $key_id {{
    default "";
    include {dir}/nginx-keys.map;
  }}
"""

# The policy every nginx gate applies (http level): the real client address from
# X-Forwarded-For of a trusted peer, the IP allowlist, the GeoIP country, the key from x-api-key or
# a Bearer token, the Authorization header to forward once a Bearer key is taken out of it.
NGINX_POLICY = """  map_hash_bucket_size 128;
  map_hash_max_size 262144;
  set_real_ip_from 127.0.0.1;
  real_ip_header X-Forwarded-For;
  geo $ip_allowed {{
    default 0;
    include {dir}/nginx-allow.geo;
  }}
  geoip2 {dir}/bench.mmdb {{
    $geoip2_country country iso_code;
  }}
  map $geoip2_country $country_denied {{
    default 0;
    include {dir}/nginx-deny-countries.map;
  }}
  map $http_authorization $bearer_key {{
    default "";
    "~^Bearer\\s+(?<tok>\\S+)$" $tok;
  }}
  map $http_x_api_key $presented_key {{
    "" $bearer_key;
    default $http_x_api_key;
  }}
""" + NGINX_KEY_MAP + """  map $http_authorization $fwd_authorization {{
    default $http_authorization;
    "~^Bearer\\s" "";
  }}
"""

# Refusals in keygate's order: allowlist (403), country (403), key (401).
NGINX_REFUSALS = """    if ($ip_allowed = 0) {{ return 403 '{{"error":"ip_not_allowed"}}'; }}
    if ($country_denied) {{ return 403 '{{"error":"country_denied"}}'; }}
    if ($key_id = "") {{ return 401 '{{"error":"unknown_key"}}'; }}
"""

# What an ops team would deploy instead of keygate, tuned, doing keygate's whole job: the policy
# above, the credential stripped, an id header added, a buffered JSON access log, keep-alive on
# both sides.
NGINX_GATE = """
load_module /usr/lib/nginx/modules/ngx_http_geoip2_module.so;
worker_processes {workers};
pid {dir}/{name}.pid;
error_log {dir}/{name}.err warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
http {{
  server_tokens off;
  tcp_nodelay on;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
""" + NGINX_POLICY + """  log_format usage escape=json '{{"ts":"$time_iso8601","request_id":"$request_id","status":$status,"key_id":"$key_id",'
                             '"client_ip":"$remote_addr","country":"$geoip2_country","method":"$request_method","path":"$uri",'
                             '"bytes_in":$request_length,"bytes_out":$body_bytes_sent,"duration_ms":$request_time,'
                             '"upstream_ms":"$upstream_response_time"}}';
  access_log {dir}/{name}-usage.jsonl usage buffer=64k flush=1s;
  upstream app {{
    server 127.0.0.1:{upstream};
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
""" + NGINX_REFUSALS + """    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header x-api-key "";
      proxy_set_header Authorization $fwd_authorization;
      proxy_set_header X-Key-Id $key_id;
      proxy_set_header X-Request-Id $request_id;
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
  }}
}}
"""


def nginx_gate(out, port, upstream, name="gate", workers="auto"):
    """NGINX_GATE listening on PORT in front of UPSTREAM; its pid, error log and usage log are
    named after NAME in OUT."""
    return NGINX_GATE.format(dir=out, port=port, upstream=upstream, name=name, workers=workers)


# The address wrk claims in X-Forwarded-For: in the allowlist, and in GB by the bench GeoIP
# database.
CLIENT_IP = "81.2.69.160"


def write_policy(folder, allowed=1000):
    """The policy both gates enforce, written for both: `bench.mmdb` (2,000 networks with
    countries), an allowlist of ALLOWED CIDRs (`nginx-allow.geo`), countries KP and IR denied
    (`nginx-deny-countries.map`). Returns the same policy as keygate YAML."""
    import ipaddress
    import random
    sys.path.insert(0, os.path.join(ROOT, "tests/integration"))
    import mmdb_writer

    rng = random.Random(7)
    nets = {"81.2.69.0/24"}
    while len(nets) < max(2000, allowed):
        net = ipaddress.ip_network((rng.getrandbits(24) << 8, 24))
        if net.is_global:
            nets.add(str(net))
    nets = sorted(nets)
    geo = [(n, "GB" if n == "81.2.69.0/24" else rng.choice(["US", "DE", "FR", "SE", "KP", "IR"])) for n in nets[:2000]]
    if ("81.2.69.0/24", "GB") not in geo:
        geo.append(("81.2.69.0/24", "GB"))
    mmdb_writer.write(os.path.join(folder, "bench.mmdb"), geo)
    # Loopback too: the WebSocket and TLS clients send no X-Forwarded-For.
    allow = ["127.0.0.0/8", "81.2.69.0/24"] + [n for n in nets if n != "81.2.69.0/24"][:allowed - 2]
    with open(os.path.join(folder, "nginx-allow.geo"), "w") as f:
        f.write("".join(f"{c} 1;\n" for c in allow))
    with open(os.path.join(folder, "nginx-deny-countries.map"), "w") as f:
        f.write("KP 1;\nIR 1;\n")
    return ('geoip_db: bench.mmdb\ntrusted_proxies: ["127.0.0.1/32"]\naccess:\n  countries: { deny: [KP, IR] }\n'
            '  allow_ips: [' + ", ".join(f'"{c}"' for c in allow) + ']\n')


NGINX_WS_GATE = """
load_module /usr/lib/nginx/modules/ngx_http_geoip2_module.so;
worker_processes {workers};
pid {dir}/{name}.pid;
error_log {dir}/{name}.err warn;
events {{ worker_connections 4096; }}
http {{
  tcp_nodelay on;
""" + NGINX_POLICY + """  access_log off;
  upstream app {{ server 127.0.0.1:{upstream}; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
""" + NGINX_REFUSALS + """    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header x-api-key "";
      proxy_set_header X-Key-Id $key_id;
      proxy_read_timeout 1h;
      # A relay buffer the size of keygate's read buffer: with the default (one page) nginx
      # relays a 16 KiB message in four reads and writes and echoes it at a third of the rate.
      proxy_buffer_size 256k;
      proxy_buffers 4 256k;
      proxy_busy_buffers_size 256k;
    }}
  }}
}}
"""


def websocket_bench(out, keygate, keys, args, procs):
    """WebSocket echo through keygate and through nginx: one C echo server, one C client keeping
    64 connections each bouncing one message, at each size of `--ws-sizes`. Messages per second
    and CPU per message. Each gate runs in both sizings: one loop or worker, and one per core
    (each gate's default), so each is compared with the other in the same configuration."""
    binary = os.path.join(out, "wsbench")
    subprocess.run(["cc", "-O2", "-o", binary, os.path.join(ROOT, "bench/wsbench.c")], check=True)
    ws_port, kg_port, ng_port = 18004, 18086, 18087
    procs.append(subprocess.Popen([binary, "server", str(ws_port)]))
    wait_port(ws_port)
    kg = start_keygate(keygate, out, "ws", kg_port, 18906, ws_port, "usage-ws.jsonl", procs)
    per_core = start_keygate(keygate, out, "ws-auto", kg_port - 1, 18908, ws_port, "usage-ws-auto.jsonl", procs, workers="auto")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    gates = {}
    # nginx with a worker per core and with one worker, as keygate runs above.
    for name, port, workers in (("wsgate", ng_port, "auto"), ("wsgate-1w", ng_port + 10, 1)):
        with open(os.path.join(out, f"{name}.conf"), "w") as f:
            f.write(NGINX_WS_GATE.format(dir=out, port=port, upstream=ws_port, workers=workers, name=name))
        gates[name] = subprocess.Popen([nginx, "-c", os.path.join(out, f"{name}.conf"), "-g", "daemon off;"])
        procs.append(gates[name])
    for port in (ws_port, kg_port, ng_port, ng_port + 10):
        wait_port(port)
    time.sleep(0.3)
    key = keys[0][1]
    targets = {"keygate": (kg_port, [kg.pid]), "keygate-auto": (kg_port - 1, [per_core.pid]),
               "nginx": (ng_port, children(gates["wsgate"].pid)), "nginx-1w": (ng_port + 10, children(gates["wsgate-1w"].pid))}
    # Optional: a second build (--baseline), with one loop, compared with nginx like the first.
    if args.baseline:
        base = start_keygate(args.baseline, out, "ws-baseline", kg_port - 2, 18907, ws_port, "usage-ws-baseline.jsonl", procs)
        targets["baseline"] = (kg_port - 2, [base.pid])
    # Short rounds, many of them, with the order rotated each round: the machine's speed drifts by
    # more than the gates differ, so each round's keygate figure is compared with the competitor's
    # from the same round, and the median of those ratios is the figure.
    rounds, seconds = args.ws_rounds, args.ws_seconds
    for size in (int(x) for x in args.ws_sizes.split(",") if x):
        websocket_echo(binary, targets, key, size, rounds, seconds)


def ratio_medians(pairs):
    """keygate's figures over the competitor's, round by round, for (keygate, competitor) result
    pairs: the medians and ranges of the throughput and CPU-per-message ratios, as printed."""
    rate = sorted(k[0] / n[0] for k, n in pairs)
    cpu = sorted(k[1] / n[1] for k, n in pairs)
    return (f"throughput median {statistics.median(rate):.2f} ({rate[0]:.2f}-{rate[-1]:.2f}), "
            f"cpu/message median {statistics.median(cpu):.2f} ({cpu[0]:.2f}-{cpu[-1]:.2f})")


# The echo's comparisons, printed in this order: each gate with a loop or worker per core (their
# defaults), each with one, keygate's one loop against nginx's worker per core, and a --baseline
# build against both nginx sizings.
ECHO_PAIRS = [("keygate-auto", "nginx"), ("keygate", "nginx-1w"), ("keygate", "nginx"),
              ("baseline", "nginx"), ("baseline", "nginx-1w")]


def websocket_echo(binary, targets, key, size, rounds, seconds):
    """ROUNDS echo runs of each target with SIZE-byte messages; prints each round and the medians
    of keygate's figures over each competitor's, round by round."""
    results = {}
    print(f"WebSocket echo: 64 connections, {size}-byte messages, {seconds}s, {rounds} rounds, order rotated")
    for rnd in range(rounds):
        for name in rotated(list(targets), rnd):
            port, pids = targets[name]
            before, m0 = cpu_ticks(pids), machine_ticks()
            r = subprocess.run([binary, "client", str(port), "/ws", "64", str(seconds), key, str(size)], capture_output=True, text=True)
            after, m1 = cpu_ticks(pids), machine_ticks()
            steal = (m1[0] - m0[0]) / max(m1[1] - m0[1], 1)
            m = re.search(r"(\d+) messages in ([\d.]+) s", r.stdout)
            if not m or m.group(1) == "0":
                print(f"  {name}: failed: {r.stderr.strip()}")
                results.setdefault(name, []).append(None)
                continue
            count, secs = int(m.group(1)), float(m.group(2))
            cpu = (after - before) / CLK_TCK * 1e6 / max(count, 1)
            results.setdefault(name, []).append((count / secs, cpu, steal))
            print(f"  round {rnd + 1} {name:12} {count / secs:10.0f} messages/s  cpu {cpu:6.2f} us/message  steal {steal * 100:4.1f}%", flush=True)
    for mine, theirs in ECHO_PAIRS:
        pairs = [(k, n) for k, n in zip(results.get(mine, []), results.get(theirs, [])) if k and n]
        if not pairs:
            continue
        k_med = [statistics.median(k[i] for k, _ in pairs) for i in (0, 1)]
        n_med = [statistics.median(n[i] for _, n in pairs) for i in (0, 1)]
        print(f"WebSocket {size} B: {mine} {k_med[0]:.0f} msg/s, {k_med[1]:.2f} us/msg; {theirs} {n_med[0]:.0f} msg/s, {n_med[1]:.2f} us/msg; "
              f"{mine}/{theirs} per round: {ratio_medians(pairs)}")
        # The same over the rounds where neither run lost more than STEAL_LIMIT to steal.
        calm = [(k, n) for k, n in pairs if k[2] <= STEAL_LIMIT and n[2] <= STEAL_LIMIT]
        if calm:
            print(f"WebSocket {size} B: {mine}/{theirs} over the {len(calm)} of {len(pairs)} rounds with steal <= {STEAL_LIMIT * 100:.0f}%: "
                  f"{ratio_medians(calm)}")
        else:
            print(f"WebSocket {size} B: {mine}/{theirs}: no round with steal <= {STEAL_LIMIT * 100:.0f}% in both runs")


def idle_tls_rss(port, pids, count):
    """RSS of `pids` before and after `count` idle TLS connections are opened (KiB)."""
    import resource
    import ssl
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 1024)), hard))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    before = sum(rss_kib(p) for p in pids)
    socks = []
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(ctx.wrap_socket(s, server_hostname="bench.test"))
        time.sleep(1.0)
        after = sum(rss_kib(p) for p in pids)
    finally:
        for s in socks:
            s.close()
    return before, after


def tls_bench(out, keygate, up_port, args, procs):
    """keygate and nginx as TLS gates with the same ECDSA P-256 certificate: keep-alive req/s,
    new handshakes/s (one request per connection), CPU per request, memory of idle TLS clients."""
    cert, key = os.path.join(out, "tls.pem"), os.path.join(out, "tls.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "30", "-subj", "/CN=bench.test", "-addext", "subjectAltName=DNS:bench.test"], check=True, capture_output=True)
    os.chmod(key, 0o644)
    kg_port, ng_port = 18088, 18089
    kg = start_keygate(keygate, out, "tls", kg_port, 18908, up_port, "usage-tls.jsonl", procs,
                       "tls:\n  certificates: [{ cert: tls.pem, key: tls.key }]\n")
    conf = nginx_gate(out, ng_port, up_port, name="tlsgate").replace(
        f"listen 127.0.0.1:{ng_port} backlog=4096;",
        f"listen 127.0.0.1:{ng_port} ssl backlog=4096; ssl_certificate {cert}; ssl_certificate_key {key}; "
        "ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m;")
    with open(os.path.join(out, "tlsgate.conf"), "w") as f:
        f.write(conf)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    ng = subprocess.Popen([nginx, "-c", os.path.join(out, "tlsgate.conf"), "-g", "daemon off;"])
    procs.append(ng)
    for port in (kg_port, ng_port):
        wait_port(port)
    time.sleep(0.5)
    targets = {"keygate": (f"https://127.0.0.1:{kg_port}", [kg.pid]), "nginx": (f"https://127.0.0.1:{ng_port}", children(ng.pid))}
    keys_file = os.path.join(out, "keys.txt")
    results = {}
    print(f"TLS (ECDSA P-256): wrk -t1 -c{args.connections} -d{args.seconds}s, {args.rounds} rounds")
    for scenario, close in (("keepalive", False), ("handshake", True)):
        for rnd in range(args.rounds):
            for name in rotated(list(targets), rnd):
                url, pids = targets[name]
                r = run_wrk(url, keys_file, "/", args.seconds, args.connections, pids, close=close)
                results.setdefault((scenario, name), []).append(r)
                print(f"  {scenario:9} round {rnd + 1} {name:8} {r['rps']:10.0f} req/s  p99 {r['p99']:6.2f} ms  cpu {r['cpu_us']:6.1f} us/req  "
                      f"non-2xx {r['non2xx']} {r['socket_errors']}", flush=True)
    for scenario in ("keepalive", "handshake"):
        k = {m: statistics.median(x[m] for x in results[(scenario, "keygate")]) for m in ("rps", "cpu_us", "p99")}
        n = {m: statistics.median(x[m] for x in results[(scenario, "nginx")]) for m in ("rps", "cpu_us", "p99")}
        print(f"TLS {scenario}: keygate {k['rps']:.0f} req/s {k['cpu_us']:.1f} us/req p99 {k['p99']:.2f} ms; nginx {n['rps']:.0f} req/s "
              f"{n['cpu_us']:.1f} us/req p99 {n['p99']:.2f} ms; throughput {k['rps'] / n['rps']:.2f}, cpu/req {k['cpu_us'] / n['cpu_us']:.2f}")
    for name, (url, pids) in targets.items():
        port = int(url.rsplit(":", 1)[1])
        before, after = idle_tls_rss(port, pids if name == "keygate" else children(ng.pid), 5000)
        print(f"5,000 idle TLS connections: {name} RSS {before // 1024} MiB → {after // 1024} MiB")


def network_gate(out, up_port, keygate, procs):
    """A second keygate with the same policy but 10,000 CIDRs in access.allow_ips."""
    folder = os.path.join(out, "net")
    os.makedirs(folder, exist_ok=True)
    shutil.copy(os.path.join(out, "keys.jsonl"), folder)
    with open(os.path.join(folder, "policy.yaml"), "w") as f:
        f.write(write_policy(folder, allowed=10000))
    p = start_keygate(keygate, folder, "keygate", 18082, 18905, up_port, "usage.jsonl", procs)
    return ("http://127.0.0.1:18082", [p.pid])


def enforce(out, keygate, kg_port):
    """A key limited to 1000/s offered about 2000/s for 10 s through the bench gate."""
    r = subprocess.run([keygate, "keys", "create", "--name", "limited", "--rate", "1000/s", "--burst", "10", "--json", "--config",
                        os.path.join(out, "keygate.yaml")], capture_output=True, text=True, check=True)
    key = json.loads(r.stdout)["key"]
    time.sleep(1.2)
    env = dict(os.environ, BENCH_KEY=key, BENCH_DELAY_MS="3.5")
    t = time.time()
    w = subprocess.run(["wrk", "-t1", "-c8", "-d10s", "-s", os.path.join(ROOT, "bench/ratelimit.lua"), f"http://127.0.0.1:{kg_port}"],
                       capture_output=True, text=True, env=env)
    elapsed = time.time() - t
    total = int(re.search(r"(\d+) requests in ([\d.]+)s", w.stdout).group(1))
    secs = float(re.search(r"(\d+) requests in ([\d.]+)s", w.stdout).group(2))
    limited = re.search(r"Non-2xx or 3xx responses: (\d+)", w.stdout)
    limited = int(limited.group(1)) if limited else 0
    allowed = total - limited
    print(f"rate 1000/s (burst 10), offered {total / secs:.0f}/s for {secs:.2f}s with {WORKERS} loop(s): {allowed} allowed = "
          f"{allowed / secs:.0f}/s ({(allowed / secs / 1000 - 1) * 100:+.1f}% of the configured rate), {limited} refused with 429")


def extras(out, kg_pid, keys, kg_port, keygate):
    """Figures beyond throughput: a 1 GiB streamed upload, 10,000 idle clients, 100,000 keys."""
    import threading
    sys.path.insert(0, os.path.join(ROOT, "tests/integration"))
    from upstream import Upstream

    # 1 GiB upload through a second gate in front of an upstream that hashes what it reads.
    echo = Upstream()
    folder = os.path.join(out, "upload")
    os.makedirs(folder)
    shutil.copy(os.path.join(out, "keys.jsonl"), folder)
    with open(os.path.join(folder, "keygate.yaml"), "w") as f:
        f.write(f'listen: "127.0.0.1:18090"\nupstream: "http://127.0.0.1:{echo.port}"\nadmin_listen: off\nkeys_file: keys.jsonl\nusage_log: /dev/null\n')
    gate = subprocess.Popen([keygate, "serve", "--config", os.path.join(folder, "keygate.yaml")], stderr=subprocess.DEVNULL)
    try:
        wait_port(18090)
        peak = [0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss_kib(gate.pid))
                time.sleep(0.05)

        threading.Thread(target=sample, daemon=True).start()
        t = time.time()
        cmd = f"head -c {1 << 30} /dev/zero | curl -sS -T - -H 'x-api-key: {keys[0][1]}' http://127.0.0.1:18090/echo"
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
        done.set()
        seen = json.loads(r.stdout)
        if 'body_bytes' not in seen:
            raise SystemExit(f'upload failed: {r.stdout} {r.stderr}')
        print(f"1 GiB chunked upload: {seen['body_bytes']} bytes arrived in {time.time() - t:.1f}s; keygate peak RSS {peak[0] // 1024} MiB")
    finally:
        gate.send_signal(signal.SIGTERM)
        gate.wait()
        echo.stop()

    subprocess.run([sys.executable, os.path.join(ROOT, "bench/idle.py"), str(kg_port), keys[0][1], str(kg_pid), "10000"])

    big = os.path.join(out, "big-store")
    os.makedirs(big)
    write_keys(big, 100000)
    with open(os.path.join(big, "keygate.yaml"), "w") as f:
        f.write('upstream: "http://127.0.0.1:18001"\nkeys_file: keys.jsonl\n')
    t = time.time()
    subprocess.run([keygate, "check", "--config", os.path.join(big, "keygate.yaml")], capture_output=True, check=True)
    print(f"100,000 keys: loaded and validated in {time.time() - t:.2f}s (keygate check, the same code path as serve)")
    reload_under_load(big, keygate)


def reload_under_load(folder, keygate):
    """100,000 keys: CLI changes while wrk runs; every reload timed, every answer checked."""
    with open(os.path.join(folder, "keygate.yaml"), "w") as f:
        f.write('listen: "127.0.0.1:18095"\nupstream: "http://127.0.0.1:18001"\nadmin_listen: off\nworkers: 2\nkeys_file: keys.jsonl\nusage_log: /dev/null\n')
    config = os.path.join(folder, "keygate.yaml")
    err = os.path.join(folder, "gate.err")
    gate = subprocess.Popen([keygate, "serve", "--config", config], stderr=open(err, "w"))
    try:
        wait_port(18095)
        env = dict(os.environ, BENCH_KEYS=os.path.join(folder, "keys.txt"), BENCH_PATH="/")
        wrk = subprocess.Popen(["wrk", "-t1", "-c64", "-d12s", "--latency", "-s", os.path.join(ROOT, "bench/rotate.lua"), "http://127.0.0.1:18095"],
                               stdout=subprocess.PIPE, text=True, env=env)
        creates = []
        time.sleep(1)
        for i in range(5):
            t = time.time()
            subprocess.run([keygate, "keys", "create", "--name", f"live {i}", "--config", config], capture_output=True, check=True)
            creates.append((time.time() - t) * 1000)
            time.sleep(1.5)
        victim = open(os.path.join(folder, "keys.txt")).readline().strip()
        kid = victim.split("_")[1]
        t = time.time()
        subprocess.run([keygate, "keys", "revoke", kid, "--config", config], capture_output=True, check=True)
        while time.time() - t < 5:
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"x-api-key: {victim}", "http://127.0.0.1:18095/"],
                               capture_output=True, text=True)
            if r.stdout == "401":
                break
        revoke_ms = (time.time() - t) * 1000
        out, _ = wrk.communicate()
        res = parse_wrk(out)
        reloads = re.findall(r"(\d+) keys in (\d+) ms", open(err).read())
        print(f"100,000 keys under wrk: keys create {', '.join(f'{c:.0f}' for c in creates)} ms; reloads "
              f"{', '.join(ms for _, ms in reloads)} ms; revoke → first 401 in {revoke_ms:.0f} ms; "
              f"{res['requests']} requests, non-2xx {res['non2xx']} (only the revoked key may be refused), socket errors: {res['socket_errors'] or 'none'}")
    finally:
        gate.send_signal(signal.SIGTERM)
        gate.wait()


def main():
    global WORKERS
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", "10")))
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--keys", type=int, default=int(os.environ.get("BENCH_KEYS_COUNT", "1000")))
    ap.add_argument("--usage-log", default="file", choices=["file", "off"], help="off sends keygate's usage log to /dev/null")
    ap.add_argument("--only", default="", help="comma list of: direct,keygate,nginx,keygate-auto,nginx-1w,baseline,keygate-nobuf")
    ap.add_argument("--sizes", default="small,big,denied")
    ap.add_argument("--no-extras", dest="extras", action="store_false", help="skip the upload, idle-connection and 100k-key figures")
    ap.add_argument("--network", action="store_true", help="add keygate+net: the same policy with 10,000 CIDRs in the allowlist")
    ap.add_argument("--rate-limited", action="store_true", help="give every key a (never reached) rate limit, to measure its cost")
    ap.add_argument("--enforce", action="store_true", help="measure how exactly a 1000/s key is held at twice its rate")
    ap.add_argument("--tls", action="store_true", help="keygate and nginx as TLS gates (same ECDSA certificate)")
    ap.add_argument("--websocket", action="store_true", help="WebSocket echo through keygate and through nginx (needs cc)")
    ap.add_argument("--ws-rounds", type=int, default=int(os.environ.get("BENCH_WS_ROUNDS", "9")), help="rounds of the WebSocket echo")
    ap.add_argument("--ws-sizes", default=os.environ.get("BENCH_WS_SIZES", "64,16384,65536"), help="message sizes of the WebSocket echo, in bytes (at most 262,130)")
    ap.add_argument("--ws-seconds", type=int, default=int(os.environ.get("BENCH_WS_SECONDS", "4")), help="seconds per WebSocket echo run")
    ap.add_argument("--buffering", action="store_true",
                    help="POST 100 B and 64 KiB bodies to keygate with request buffering on (the default) and off, and to nginx")
    ap.add_argument("--cluster", action="store_true",
                    help="add keygate-cluster: the same gate with cluster on (a local redis-server), to show Redis is off the hot path")
    ap.add_argument("--workers", default=WORKERS, help="keygate's event loops (a number or auto); default %(default)s")
    ap.add_argument("--baseline", default="", help="another keygate binary (say, a build of the previous commit) to run beside this one, same keys and policy")
    args = ap.parse_args()
    WORKERS = args.workers

    keygate = os.path.join(ROOT, ".build/release/keygate")
    out = os.path.join(ROOT, "bench-out")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    up_port, kg_port, ng_port = 18001, 18080, 18081
    with open(os.path.join(out, "big.bin"), "wb") as f:
        f.write(os.urandom(64 << 10))
    small = "x" * 100
    keys = write_keys(out, args.keys, rate="1000000/s" if args.rate_limited else None)
    with open(os.path.join(out, "nginx-keys.map"), "w") as f:
        for kid, key in keys:
            f.write(f'"{key}" "{kid}";\n')
    usage = "usage.jsonl" if args.usage_log == "file" else "/dev/null"
    with open(os.path.join(out, "policy.yaml"), "w") as f:
        f.write(write_policy(out))
    with open(os.path.join(out, "keygate.yaml"), "w") as f:
        f.write(keygate_policy(out, kg_port, 18901, up_port, usage))
    with open(os.path.join(out, "upstream.conf"), "w") as f:
        f.write(NGINX_UPSTREAM.format(dir=out, port=up_port, small=small))
    with open(os.path.join(out, "gate.conf"), "w") as f:
        f.write(nginx_gate(out, ng_port, up_port))

    procs = []
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    try:
        procs.append(subprocess.Popen([nginx, "-c", os.path.join(out, "upstream.conf"), "-g", "daemon off;"]))
        procs.append(subprocess.Popen([nginx, "-c", os.path.join(out, "gate.conf"), "-g", "daemon off;"]))
        t = time.time()
        kg = subprocess.Popen([keygate, "serve", "--config", os.path.join(out, "keygate.yaml")], stderr=open(os.path.join(out, "keygate.err"), "w"))
        procs.append(kg)
        for p in (up_port, kg_port, ng_port):
            wait_port(p)
        startup = time.time() - t
        time.sleep(0.5)
        ng_pids = children(procs[1].pid)

        def usage_of(name):
            return f"usage-{name}.jsonl" if args.usage_log == "file" else "/dev/null"

        print(f"idle RSS, started and no traffic yet: keygate {rss_kib(kg.pid) / 1024:.1f} MiB; nginx gate "
              f"{sum(rss_kib(p) for p in ng_pids) / 1024:.1f} MiB (master and {len(ng_pids) - 1} workers)")
        targets = {
            "direct": (f"http://127.0.0.1:{up_port}", []),
            "keygate": (f"http://127.0.0.1:{kg_port}", [kg.pid]),
            "nginx": (f"http://127.0.0.1:{ng_port}", ng_pids),
        }
        wanted = [x for x in args.only.split(",") if x]
        # The other sizing of each gate: keygate with one loop per core (its default), nginx with
        # one worker, so neither is compared only in the configuration that suits it. Started
        # only for a run that measures them.
        if not wanted or "keygate-auto" in wanted:
            auto = start_keygate(keygate, out, "keygate-auto", 18092, 18910, up_port, usage_of("auto"), procs, workers="auto")
            targets["keygate-auto"] = ("http://127.0.0.1:18092", [auto.pid])
        if not wanted or "nginx-1w" in wanted:
            with open(os.path.join(out, "gate-1w.conf"), "w") as f:
                f.write(nginx_gate(out, 18091, up_port, name="gate-1w", workers=1))
            one = subprocess.Popen([nginx, "-c", os.path.join(out, "gate-1w.conf"), "-g", "daemon off;"])
            procs.append(one)
            wait_port(18091)
            targets["nginx-1w"] = ("http://127.0.0.1:18091", children(one.pid))
        if args.network:
            targets["keygate+net"] = network_gate(out, up_port, keygate, procs)
        if args.buffering:
            nobuf = start_keygate(keygate, out, "nobuf", 18083, 18903, up_port, usage_of("nobuf"), procs, "limits: { request_buffer: 0 }\n")
            targets["keygate-nobuf"] = ("http://127.0.0.1:18083", [nobuf.pid])
        if args.cluster:
            redis = subprocess.Popen(["redis-server", "--port", "18379", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL)
            procs.append(redis)
            wait_port(18379)
            os.makedirs(os.path.join(out, "cluster-state"), exist_ok=True)
            clustered = start_keygate(keygate, out, "cluster", 18084, 18904, up_port, usage_of("cluster"), procs,
                                      'state_dir: cluster-state\ncluster: { redis: "redis://127.0.0.1:18379/0" }\n')
            targets["keygate-cluster"] = ("http://127.0.0.1:18084", [clustered.pid])
        if args.baseline:
            base = start_keygate(args.baseline, out, "baseline", 18082, 18902, up_port, usage_of("baseline"), procs)
            targets["baseline"] = ("http://127.0.0.1:18082", [base.pid])
        only = wanted or list(targets)
        print(f"keygate bench: {args.keys} keys, wrk -t1 -c{args.connections} -d{args.seconds}s, {args.rounds} rounds, "
              f"usage log {args.usage_log}; keygate up in {startup:.2f}s")
        keys_file = os.path.join(out, "keys.txt")
        bad_keys_file = os.path.join(out, "bad-keys.txt")
        with open(bad_keys_file, "w") as f:
            f.write("\n".join(make_key()[1] for _ in range(1000)) + "\n")
        results = {}
        scenarios = [("small", "/", 0), ("big", "/big", 0), ("denied", "/", 0)]
        if args.buffering:
            scenarios = [("post100", "/", 100), ("post64k", "/", 65536)]
        for size, path, body in scenarios:
            if size not in args.sizes.split(",") and not args.buffering:
                continue
            # "denied": keys of the right shape that are in no store (401 from keygate and nginx).
            kf = bad_keys_file if size == "denied" else keys_file
            for name in only:
                url, pids = targets[name]
                run_wrk(url, kf, path, 2, args.connections, pids, body)  # warm-up
            for rnd in range(args.rounds):
                for name in rotated(only, rnd):
                    url, pids = targets[name]
                    r = run_wrk(url, kf, path, args.seconds, args.connections, pids, body)
                    results.setdefault((size, name), []).append(r)
                    print(f"  {size:7} round {rnd + 1} {name:8} {r['rps']:10.0f} req/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  "
                          f"cpu {r['cpu_us']:6.1f} us/req  non-2xx {r['non2xx']} {r['socket_errors']}", flush=True)
        print()
        print(f"{'size':8}{'target':14}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'cpu us/req':>12}")
        summary = {}
        for (size, name), rs in results.items():
            s = {k: statistics.median([r[k] for r in rs]) for k in ("rps", "p50", "p99", "cpu_us")}
            summary[(size, name)] = s
            print(f"{size:8}{name:14}{s['rps']:10.0f}{s['p50']:9.2f}{s['p99']:9.2f}{s['cpu_us']:12.1f}")
        for size in ("small", "big", "denied"):
            for mine, theirs in (("keygate", "nginx"), ("keygate", "nginx-1w"), ("keygate-auto", "nginx")):
                k, n = summary.get((size, mine)), summary.get((size, theirs))
                if k and n:
                    print(f"{size}: {mine}/{theirs} throughput {k['rps'] / n['rps']:.2f}, cpu/req {k['cpu_us'] / n['cpu_us']:.2f}, "
                          f"p99 {k['p99'] / n['p99']:.2f}")
        for size in ("post100", "post64k"):
            k, n = summary.get((size, "keygate")), summary.get((size, "keygate-nobuf"))
            if k and n:
                print(f"{size}: buffering on/off throughput {k['rps'] / n['rps']:.2f}, cpu/req {k['cpu_us'] / n['cpu_us']:.2f}, "
                      f"p99 {k['p99'] / n['p99']:.2f}")
            k, n = summary.get((size, "keygate")), summary.get((size, "nginx"))
            if k and n:
                print(f"{size}: keygate/nginx throughput {k['rps'] / n['rps']:.2f}, cpu/req {k['cpu_us'] / n['cpu_us']:.2f}, "
                      f"p99 {k['p99'] / n['p99']:.2f}")
        for size in ("small", "big", "denied"):
            k, c = summary.get((size, "keygate")), summary.get((size, "keygate-cluster"))
            if k and c:
                print(f"{size}: cluster on/off throughput {c['rps'] / k['rps']:.2f}, cpu/req {c['cpu_us'] / k['cpu_us']:.2f}, "
                      f"p99 {c['p99'] / k['p99']:.2f}")
        for size in ("small", "big", "denied"):
            k, b = summary.get((size, "keygate")), summary.get((size, "baseline"))
            if k and b:
                print(f"{size}: keygate/baseline throughput {k['rps'] / b['rps']:.2f}, cpu/req {k['cpu_us'] / b['cpu_us']:.2f}, "
                      f"p99 {k['p99'] / b['p99']:.2f}")
        print(f"keygate RSS after run: {rss_kib(kg.pid) // 1024} MiB")
        if args.websocket:
            websocket_bench(out, keygate, keys, args, procs)
        if args.tls:
            tls_bench(out, keygate, up_port, args, procs)
        if args.enforce:
            enforce(out, keygate, kg_port)
        if args.extras:
            extras(out, kg.pid, keys, kg_port, keygate)
    finally:
        stop(procs)


def stop(procs, timeout=20):
    """SIGTERM to every process started, newest first; a kill for any that outlives `timeout`."""
    for p in reversed(procs):
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()


if __name__ == "__main__":
    main()
