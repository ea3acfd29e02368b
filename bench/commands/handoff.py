"""`python -m bench handoff-peer`: the passive side of a handoff pair (bench.benchmarks.handoff.peer), started by a
handoff point of a run on this node (``--connect``), or as the second task of a SLURM step (``--rendezvous``: the file
where the run, handoff.peer_rendezvous=FILE, writes its address; scripts/handoff_srun.sh starts both)."""
from __future__ import annotations

import argparse

from bench.core.errors import UserError


def cmd_peer(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench handoff-peer", description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--connect", metavar="HOST:PORT", help="the run's side channel (a run on this node passes it)")
    where.add_argument("--rendezvous", metavar="FILE", help="wait for a run's address in FILE (a shared directory)")
    p.add_argument("--token", default="", help="the token the run gave (--connect)")
    p.add_argument("--wait-s", type=float, default=600.0, help="how long to wait for the run's address (s)")
    args = p.parse_args(argv)
    from bench.benchmarks.handoff.peer import serve_connect, serve_rendezvous

    if args.connect:
        host, _, port = args.connect.rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"--connect={args.connect!r} is not allowed: HOST:PORT")
        return serve_connect(host, int(port), args.token)
    try:
        return serve_rendezvous(args.rendezvous, args.wait_s)
    except TimeoutError as e:
        raise UserError(str(e)) from None
