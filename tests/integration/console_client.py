"""A small client of the console's JSON API: a cookie jar and the CSRF header, as a browser
would keep them."""
import http.client
import json


class ConsoleClient:
    def __init__(self, port):
        self.port = port
        self.cookie = None
        self.csrf = None

    def request(self, method, path, body=None, csrf=True, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = {"Accept": "application/json"}
        if headers:
            h.update(headers)
        if self.cookie:
            h["Cookie"] = "keygate_session=" + self.cookie
        if csrf and self.csrf and method != "GET":
            h["X-CSRF-Token"] = self.csrf
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        raw = r.read()
        headers = {k.lower(): v for k, v in r.getheaders()}
        for k, v in r.getheaders():
            if k.lower() == "set-cookie" and v.startswith("keygate_session="):
                value = v.split(";")[0].split("=", 1)[1]
                self.cookie = value or None
        c.close()
        try:
            parsed = json.loads(raw) if raw and headers.get("content-type", "").startswith("application/json") else raw
        except ValueError:
            parsed = raw
        return r.status, headers, parsed, raw

    def login(self, user, password):
        status, headers, body, _ = self.request("POST", "/api/login", {"user": user, "password": password})
        if status == 200:
            self.csrf = body["csrf"]
        return status, headers, body
