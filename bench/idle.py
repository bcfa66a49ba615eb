"""10,000 idle keep-alive clients: each makes one request, then stays connected and silent.
Prints keygate's RSS before and after. Figures only."""
import os
import resource
import socket
import sys
import time

port = int(sys.argv[1])
key = sys.argv[2]
pid = int(sys.argv[3])
count = int(sys.argv[4]) if len(sys.argv) > 4 else 10000


def rss():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024


soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 1024), hard))
before = rss()
socks = []
request = f"GET / HTTP/1.1\r\nHost: bench\r\nx-api-key: {key}\r\n\r\n".encode()
ok = 0
t = time.time()
for i in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(request)
    socks.append(s)
    if len(socks) % 500 == 0:
        for c in socks[-500:]:
            data = c.recv(4096)
            ok += data.startswith(b"HTTP/1.1 200")
for c in socks[len(socks) - len(socks) % 500:]:
    ok += c.recv(4096).startswith(b"HTTP/1.1 200")
time.sleep(1.0)
after = rss()
print(f"idle clients: {count} connections, {ok} answered 200 in {time.time() - t:.1f}s; keygate RSS {before} MiB before, {after} MiB with all idle")
for s in socks:
    s.close()
