"""The harness's side of a handoff pair: the peer process (started here, or a second SLURM task met through a
rendezvous file) and its side channel, this process's NIXL agent, and one point's transfer (:class:`Handoff`).

This process always initiates and times: with op=read it is decode (its pool the destination, READ from the peer's
prefill pool), with op=write it is prefill (its pool the source, WRITE into the peer's decode pool). One request is
one descriptor list (``make_prepped_xfer`` over lists prepared once per point, as vLLM's NixlConnector does per
request) carrying a notification to the peer; the layer-by-layer mode posts each layer's list when that layer's
prefill would end.
"""
from __future__ import annotations

import json
import os
import secrets
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from bench.benchmarks.handoff.wire import recv, send

CALL_TIMEOUT_S = 600.0  # a side-channel command (the peer fills and checks pools of up to GBs)
TRANSFER_TIMEOUT_S = 120.0  # one request's transfer; past it the point fails (a peer gone, a transfer hung)
NOTIF_WAIT_S = 2.0  # how long the peer may take to see the last request's notification


class PeerError(RuntimeError):
    """The peer refused a command or is gone (its reason, or the tail of its log)."""


class PeerLink:
    """The side channel to one peer process (``proc``: the process this run started, None for a SLURM task)."""

    def __init__(self, sock: socket.socket, hello: dict, how: str, proc=None, log=None, rendezvous=None):
        self.sock, self.hello, self.how, self.proc, self.log, self.rendezvous = sock, hello, how, proc, log, rendezvous
        self.broken = False

    def call(self, op: str, timeout_s: float = CALL_TIMEOUT_S, **fields) -> dict:
        try:
            send(self.sock, {"op": op, **fields})
            reply = recv(self.sock, timeout_s)
        except (OSError, ConnectionError, TimeoutError) as e:
            self.broken = True
            raise PeerError(f"handoff peer ({self.how}): {e}{self._log_tail()}") from None
        if not reply.get("ok"):
            raise PeerError(f"handoff peer: {op}: {reply.get('why')}")
        return reply

    def _log_tail(self) -> str:
        if self.log is None:
            return ""
        self.log.seek(0)
        lines = [x for x in self.log.read().decode(errors="replace").splitlines() if x.strip()]
        return f" (peer log: {' | '.join(lines[-3:])})" if lines else ""

    def close(self) -> None:
        if not self.broken:
            try:
                self.call("bye", timeout_s=30)
            except PeerError:
                pass
        self.sock.close()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.rendezvous:
            Path(self.rendezvous).unlink(missing_ok=True)


def _accept(srv: socket.socket, token: str, wait_s: float, proc=None, log=None) -> tuple[socket.socket, dict]:
    """The peer's connection (the first one that presents ``token``), or PeerError when it does not come."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            link = PeerLink(srv, {}, "spawned", log=log)
            raise PeerError(f"the handoff peer exited with code {proc.returncode} before connecting"
                            f"{link._log_tail()}")
        if not select.select([srv], [], [], 0.2)[0]:
            continue
        sock, _ = srv.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            hello = recv(sock, 30)
        except (OSError, ConnectionError, TimeoutError, ValueError):
            sock.close()
            continue
        if hello.get("op") == "hello" and secrets.compare_digest(str(hello.get("token")), token):
            return sock, hello
        sock.close()  # not our peer
    raise PeerError(f"no handoff peer connected within {wait_s:g} s")


def spawn_peer(wait_s: float) -> PeerLink:
    """Start ``python -m bench handoff-peer`` on this node and take its connection (loopback, a token)."""
    srv = socket.create_server(("127.0.0.1", 0))
    token = secrets.token_hex(16)
    log = tempfile.TemporaryFile()
    root = str(Path(__file__).resolve().parents[3])  # the directory holding the bench package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    env.setdefault("NIXL_LOG_LEVEL", "WARN")
    proc = subprocess.Popen([sys.executable, "-m", "bench", "handoff-peer", "--connect",
                             f"127.0.0.1:{srv.getsockname()[1]}", "--token", token],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        sock, hello = _accept(srv, token, wait_s, proc, log)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        srv.close()
    return PeerLink(sock, hello, "spawned on this node", proc=proc, log=log)


def rendezvous_peer(path: str, wait_s: float) -> PeerLink:
    """Listen on every interface, write this host, port and a token to ``path`` (a file both tasks see; mode 0600,
    replaced atomically) and take the connection of the peer task that reads it."""
    srv = socket.create_server(("", 0))
    token = secrets.token_hex(16)
    info = {"host": socket.gethostname(), "port": srv.getsockname()[1], "token": token, "pid": os.getpid()}
    tmp = f"{path}.{os.getpid()}.tmp"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)
    try:
        sock, hello = _accept(srv, token, wait_s)
    except PeerError as e:
        Path(path).unlink(missing_ok=True)
        raise PeerError(f"{e}: start it with `python -m bench handoff-peer --rendezvous {path}` (scripts/"
                        "handoff_srun.sh runs both tasks)") from None
    finally:
        srv.close()
    return PeerLink(sock, hello, f"rendezvous {path} (started elsewhere: a SLURM task)", rendezvous=path)


class Peers:
    """The run's peer (a run resource): opened on first use, opened again if it died (spawned peers only)."""

    def __init__(self, cfg):
        self.rendezvous = cfg.handoff.peer_rendezvous
        self.wait_s = float(cfg.handoff.peer_wait_s)
        self.link: Optional[PeerLink] = None

    def get(self) -> PeerLink:
        if self.link is not None and self.link.broken and not self.rendezvous:
            self.link.close()
            self.link = None
        if self.link is None:
            self.link = rendezvous_peer(str(self.rendezvous), self.wait_s) if self.rendezvous else \
                spawn_peer(self.wait_s)
        return self.link

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
