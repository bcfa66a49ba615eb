"""A real HTTP/1.1 upstream for keygate's integration tests.

It speaks raw HTTP over sockets (so tests control framing exactly) and answers:
  /echo            JSON: method, target, headers (in order), body length and SHA-256
  /bytes/N         N bytes of a fixed pattern (?mode=chunked | close for other framings)
  /status/N        an empty response with status N (204, 304, ...)
  /slow/MS         answers after MS milliseconds
  /die             promises 1000 bytes, sends 10, closes
  /close           answers with Connection: close
  /ws              a WebSocket echo (RFC 6455), after a proper handshake
  /ws-refuse       refuses the upgrade with a plain 403, keeping the connection
  /ws-held         a WebSocket that sends one frame, half of a second, and the rest of it only
                   once the test sets `release`
  /sse             server-sent events: one now, one a second later, then the end
"""
import base64
import hashlib
import json
import socket
import socketserver
import threading
import time

PATTERN = bytes(range(256)) * 4096  # 1 MiB


def pattern_bytes(n):
    out = bytearray()
    while len(out) < n:
        out += PATTERN[: n - len(out)]
    return bytes(out)


class Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError
        self.buf += data

    def until(self, marker):
        while marker not in self.buf:
            self.fill()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def exactly(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        server = self.server
        with server.lock:
            server.connections += 1
        reader = Reader(self.request)
        self.reader = reader
        try:
            while True:
                head = reader.until(b"\r\n\r\n").decode("latin-1")
                lines = head.split("\r\n")
                method, target, version = lines[0].split(" ")
                headers = []
                for line in lines[1:]:
                    if line:
                        k, v = line.split(":", 1)
                        headers.append([k, v.strip()])
                hmap = {k.lower(): v for k, v in headers}
                digest = hashlib.sha256()
                size = 0
                if "transfer-encoding" in hmap:
                    while True:
                        size_line = reader.until(b"\r\n")
                        n = int(size_line.split(b";")[0], 16)
                        if n == 0:
                            reader.until(b"\r\n")
                            break
                        chunk = reader.exactly(n)
                        digest.update(chunk)
                        size += n
                        reader.exactly(2)
                elif "content-length" in hmap:
                    remaining = int(hmap["content-length"])
                    while remaining > 0:
                        take = min(remaining, 1 << 20)
                        chunk = reader.exactly(take)
                        digest.update(chunk)
                        size += take
                        remaining -= take
                with server.lock:
                    server.requests.append({"method": method, "target": target, "headers": headers})
                if not self.respond(method, target, headers, size, digest.hexdigest()):
                    return
                if hmap.get("connection", "").lower() == "close":
                    return
        except (EOFError, ConnectionError, OSError):
            return

    def send(self, data):
        self.request.sendall(data)

    def respond(self, method, target, headers, size, sha):
        path = target.split("?")[0]
        hmap = {k.lower(): v for k, v in headers}
        if path in ("/ws", "/ws-flood", "/ws-sink", "/ws-held") and hmap.get("upgrade", "").lower() == "websocket":
            accept = base64.b64encode(hashlib.sha1((hmap["sec-websocket-key"] + WS_GUID).encode()).digest()).decode()
            self.send(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
            params = dict(p.split("=", 1) for p in target.partition("?")[2].split("&") if "=" in p)
            if path == "/ws-flood":
                # As fast as the gate takes it (or `gap` seconds apart): N bytes of pattern in
                # 64 KiB frames (or `frame` bytes each, the same frame over and over), then "done"
                # (and, with `close`, closes the connection).
                gap = float(params.get("gap", 0))
                size = int(params.get("frame", 65536))
                total = int(params["bytes"])
                data = pattern_bytes(total if "frame" not in params else size)
                try:
                    for i in range(0, total, size):
                        self.send(ws_frame(0x2, data[i : i + size] if "frame" not in params else data))
                        if gap:
                            time.sleep(gap)
                    self.send(ws_frame(0x1, b"done"))
                except OSError:
                    return False  # the gate closed the tunnel
                if "close" in params:
                    return False  # and closes the connection at once
            elif path == "/ws-held":
                # `frame` bytes of pattern, then the same frame cut after its first half, then
                # (once released, within 10 s) its second half and a last "after" frame.
                frame = ws_frame(0x2, pattern_bytes(int(params["frame"])))
                half = len(frame) // 2
                try:
                    self.send(frame + frame[:half])
                    self.server.release.wait(10)
                    self.send(frame[half:] + ws_frame(0x1, b"after"))
                except OSError:
                    return False  # the gate closed the tunnel
                time.sleep(1)
                return False
            elif path == "/ws-sink":
                # Reads nothing for a while, then everything: its answer is the byte count and
                # SHA-256 of the binary frames before the client's "end".
                # `gap`: seconds to wait after each frame, to read slower than the client sends;
                # `rcvbuf`: a small receive buffer, so that little waits in the kernel.
                if "rcvbuf" in params:
                    self.request.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(params["rcvbuf"]))
                time.sleep(float(params["pause"]))
                gap = float(params.get("gap", 0))
                digest, count = hashlib.sha256(), 0
                while True:
                    opcode, data = ws_read_frame(self.reader)
                    if gap:
                        time.sleep(gap)
                    if opcode == 0x1 and data == b"end":
                        break
                    digest.update(data)
                    count += len(data)
                with self.server.lock:
                    self.server.sinks.append((count, digest.hexdigest()))
                self.send(ws_frame(0x1, f"{count} {digest.hexdigest()}".encode()))
            ws_echo(self.request, self.reader)
            return False
        if path == "/ws-refuse":
            body = b'{"error":"no"}'
            self.send(b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            return True
        if path == "/sse":
            self.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i, pause in ((1, 0), (2, 1.0)):
                time.sleep(pause)
                event = b"data: %d\n\n" % i
                self.send(b"%x\r\n" % len(event) + event + b"\r\n")
            self.send(b"0\r\n\r\n")
            return True
        query = target.split("?")[1] if "?" in target else ""
        head_only = method == "HEAD"
        if path.startswith("/bytes/"):
            n = int(path.split("/")[2])
            body = pattern_bytes(n)
            if "mode=chunked" in query:
                self.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for i in range(0, n, 65536):
                    piece = body[i : i + 65536]
                    self.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
                self.send(b"0\r\n\r\n")
                return True
            if "mode=close" in query:
                self.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)
                return False
            self.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n + (b"" if head_only else body))
            return True
        if path.startswith("/status/"):
            code = int(path.split("/")[2])
            extra = b"Content-Length: 42\r\nETag: \"x\"\r\n" if code == 304 else b""
            self.send(b"HTTP/1.1 %d Status\r\n%s\r\n" % (code, extra))
            return True
        if path.startswith("/slow/"):
            time.sleep(int(path.split("/")[2]) / 1000)
        if path == "/die":
            self.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
            return False
        body = json.dumps(
            {"method": method, "target": target, "headers": headers, "body_bytes": size, "body_sha256": sha}
        ).encode()
        close = path == "/close"
        self.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nX-Upstream: yes\r\n%s\r\n"
            % (len(body), b"Connection: close\r\n" if close else b"")
            + (b"" if head_only else body)
        )
        return not close


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_read_frame(reader):
    """One frame: (opcode, payload), unmasked."""
    b0, b1 = reader.exactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(reader.exactly(2), "big")
    elif n == 127:
        n = int.from_bytes(reader.exactly(8), "big")
    mask = reader.exactly(4) if b1 & 0x80 else None
    data = reader.exactly(n)
    if mask:
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
    return b0 & 0x0F, data


def ws_frame(opcode, payload, mask=False):
    import os
    head = bytes([0x80 | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if mask:
        key = os.urandom(4)
        return head + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))
    return head + payload


def ws_echo(sock, reader):
    while True:
        opcode, data = ws_read_frame(reader)
        if opcode == 0x8:
            sock.sendall(ws_frame(0x8, data[:2]))
            return
        if opcode == 0x9:
            sock.sendall(ws_frame(0xA, data))
            continue
        sock.sendall(ws_frame(opcode, data))


class Upstream(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog is 5: fifty tunnels opened at once overflowed it on a busy
    # machine, the kernel dropped SYNs, and the gate's 2 s connect timeout answered 502.
    request_queue_size = 128

    def __init__(self, port=0):
        super().__init__(("127.0.0.1", port), Handler)
        self.lock = threading.Lock()
        self.requests = []
        self.sinks = []  # (bytes, SHA-256) of what each /ws-sink tunnel received
        self.release = threading.Event()  # lets /ws-held finish its frame
        self.connections = 0
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self):
        return self.server_address[1]

    def last(self):
        with self.lock:
            return self.requests[-1]

    def stop(self):
        self.shutdown()
        self.server_close()


if __name__ == "__main__":
    import sys

    u = Upstream(int(sys.argv[1]) if len(sys.argv) > 1 else 9000)
    print(u.port, flush=True)
    u.thread.join()
