"""HTTP helpers of the dashboard tests: sign in with plain HTTP requests, as a script would.

The session cookie is Secure, and HTTP clients keep Secure cookies off plain http (browsers
make an exception for loopback), so the helpers carry cookies by hand.
"""

from __future__ import annotations

import re
import time
from http.cookies import SimpleCookie

import httpx

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


def cookies_of(response: httpx.Response) -> dict[str, SimpleCookie]:
    out = {}
    for header in response.headers.get_list("set-cookie"):
        cookie = SimpleCookie()
        cookie.load(header)
        for name in cookie:
            out[name] = cookie
    return out


class Http:
    """A plain HTTP client with a cookie header it manages itself."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, follow_redirects=False, timeout=15)
        self.cookies: dict[str, str] = {}

    def _headers(self, headers: dict | None) -> dict:
        out = dict(headers or {})
        if self.cookies:
            out["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return out

    def _keep(self, response: httpx.Response) -> httpx.Response:
        for name, cookie in cookies_of(response).items():
            if cookie[name]["max-age"] == "0" or cookie[name].value in ("", '""'):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = cookie[name].value
        return response

    def get(self, path: str, **kw) -> httpx.Response:
        return self._keep(self.client.get(path, headers=self._headers(kw.pop("headers", None)), **kw))

    def post(self, path: str, **kw) -> httpx.Response:
        return self._keep(self.client.post(path, headers=self._headers(kw.pop("headers", None)), **kw))

    def csrf(self, path: str = "/fleet") -> str:
        return CSRF_META.search(self.get(path).text).group(1)

    def close(self) -> None:
        self.client.close()


def sign_in(base_url: str, user: str, password: str) -> Http:
    http = Http(base_url)
    form = http.get("/signin")
    token = CSRF_META.search(form.text).group(1)
    reply = http.post("/signin", data={"csrf_token": token, "user": user, "password": password, "next": "/"})
    assert reply.status_code == 303, reply.text
    return http


def wait_until(predicate, timeout: float = 20.0, every: float = 0.1):
    """predicate()'s first truthy value, polled (test side only) until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(every)
