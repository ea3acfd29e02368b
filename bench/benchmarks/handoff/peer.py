"""The passive side of a handoff pair: a process of its own (started by the benchmark on this node, or a second SLURM
task on another node: ``python -m bench handoff-peer``) with its own NIXL agent and its side of each point's pool.

The harness's process initiates every transfer and times it; this side answers the side channel's commands and,
between them, progresses its agent (NIXL without a progress thread: the notifications a transfer carries arrive when
the agent is polled, as a serving engine polls it every step). With op=read this side is prefill (the source: its
pool holds the seeded pattern); with op=write it is decode (the destination: poisoned, then checked byte for byte
here, outside timing, on the harness's request).
"""
from __future__ import annotations

import json
import os
import select
import socket
import time
from pathlib import Path

from bench.benchmarks.handoff.wire import (Pool, PoolShape, b64, ensure_backend, init_cuda, make_agent, nixl_version,
                                          recv, send)

POLL_S = 0.0002  # the idle loop's wait for a command; between waits the agent is polled for notifications


class Peer:
    """One peer process: its agent, the current point's pool and registration, the notifications received."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.name = f"tierbench-peer-{socket.gethostname()}-{os.getpid()}"
        self.agent = make_agent(self.name)
        self.pool = None
        self.reg = None
        self.backend = None
        self.notifs = 0

    def hello(self, token: str) -> None:
        send(self.sock, {"op": "hello", "token": token, "name": self.name, "host": socket.gethostname(),
                         "pid": os.getpid(), "nixl": nixl_version(), "plugins": self.agent.get_plugin_list()})

    def serve(self) -> None:
        """Answer commands until the harness says bye or closes the channel; the agent is polled in between."""
        while True:
            if not select.select([self.sock], [], [], POLL_S)[0]:
                self.progress()
                continue
            try:
                msg = recv(self.sock)
            except ConnectionError:
                break
            if msg.get("op") == "bye":
                self.teardown(msg)
                send(self.sock, {"ok": True})
                break
            try:
                reply = getattr(self, f"op_{msg.get('op')}")(msg)
            except Exception as e:  # the point fails with the peer's reason; the peer serves the next one
                first = (str(e).strip().splitlines() or [""])[0][:300]
                reply = {"ok": False, "why": f"{type(e).__name__}: {first}"}
            send(self.sock, reply)
        self.teardown({})

    def progress(self) -> None:
        if not self.agent.backends:  # nothing to poll before the first backend (NIXL refuses the call)
            return
        for msgs in self.agent.get_new_notifs().values():
            self.notifs += len(msgs)

    def _metadata(self) -> dict:
        return {"ok": True, "md": b64(self.agent.get_agent_metadata())}

    def op_backend(self, msg: dict) -> dict:
        init_cuda(msg.get("cuda_gpu"))
        ensure_backend(self.agent, msg["backend"])
        return self._metadata()

    def op_setup(self, msg: dict) -> dict:
        """Allocate this side's pool (source: its seeded pattern; destination: POISON) and register it."""
        self.teardown(msg)
        self.pool = Pool(PoolShape(**msg["shape"]), msg["memory"], msg.get("gpu"))
        if msg["role"] == "source":
            self.pool.fill_pattern(int(msg["seed"]))
        else:
            self.pool.poison()
        self.backend = msg["backend"]
        self.reg = self.agent.register_memory(self.pool.reg_list(), self.pool.nixl_mem, backends=[self.backend])
        self.notifs = 0
        return {**self._metadata(), "bases": self.pool.bases(), "dev_id": self.pool.dev_id}

    def op_poison(self, msg: dict) -> dict:
        self.pool.poison()
        return {"ok": True}

    def op_verify(self, msg: dict) -> dict:
        """The destination checked byte for byte: the request's chunks against the source's pattern, the rest
        still POISON."""
        return {"ok": True, "bad": self.pool.first_bad(int(msg["seed"]), msg["src"], msg["dst"])}

    def op_notifs(self, msg: dict) -> dict:
        self.progress()
        return {"ok": True, "count": self.notifs}

    def op_teardown(self, msg: dict) -> dict:
        self.teardown(msg)
        return {"ok": True}

    def teardown(self, msg: dict) -> None:
        if self.reg is not None:
            self.agent.deregister_memory(self.reg, backends=[self.backend])
        self.pool, self.reg = None, None


def serve_connect(host: str, port: int, token: str) -> int:
    """Connect to the harness at ``host:port``, present ``token``, serve until bye (exit code 0)."""
    sock = socket.create_connection((host, port), timeout=60)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    peer = Peer(sock)
    peer.hello(token)
    peer.serve()
    sock.close()
    return 0


def serve_rendezvous(path: str, wait_s: float) -> int:
    """Wait up to ``wait_s`` for the harness's address in the file ``path`` (written by a handoff point of a run with
    handoff.peer_rendezvous=PATH), then serve it. A stale file (no one listening) is waited past."""
    deadline = time.monotonic() + wait_s
    seen = None
    while time.monotonic() < deadline:
        p = Path(path)
        try:
            info = json.loads(p.read_text())
            stamp = p.stat().st_mtime_ns
        except (OSError, ValueError):
            time.sleep(0.2)
            continue
        if stamp != seen:
            seen = stamp
            try:
                return serve_connect(info["host"], int(info["port"]), info["token"])
            except ConnectionRefusedError:
                pass
        time.sleep(0.2)
    raise TimeoutError(f"no handoff run wrote {path} (or none listened at its address) within {wait_s:g} s")
