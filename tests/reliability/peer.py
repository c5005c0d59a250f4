"""A scripted device as its own process (``python -m tests.reliability.peer ...``), so that a test
can SIGKILL it like a real device: `server._synthetic.ScriptedPeer` (real MQTT 5 connection, Last
Will, retained status, seeded synthetic updates of the task's exact layout) until SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="peer")
    p.add_argument("--url", required=True)
    p.add_argument("--fleet", required=True)
    p.add_argument("--client", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--tier", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0, help="seconds between a task and its update")
    args = p.parse_args(argv)
    from server import ScriptedPeer

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    peer = ScriptedPeer(
        args.url, args.fleet, args.client, args.password, tier_hint=args.tier, seed=args.seed, delay_s=args.delay
    ).start(timeout=30)
    print(f"peer {args.client} connected", flush=True)
    stop.wait()
    peer.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
