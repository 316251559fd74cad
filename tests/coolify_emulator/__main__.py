"""Run the emulator standalone: ``python -m tests.coolify_emulator --port 8999 --token TOKEN``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .emulator import CoolifyEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.coolify_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8999)
    parser.add_argument("--proxy-port", type=int, default=0, help="emulated Traefik port (0 = random)")
    parser.add_argument("--token", action="append", default=[], help="bearer token (repeatable)")
    parser.add_argument("--abilities", default="root", help="comma-separated abilities for --token")
    parser.add_argument("--docker", action="store_true", help="run services on the local Docker Engine")
    parser.add_argument("--action-delay", type=float, default=0.3)
    parser.add_argument("--rate-limit", type=int, default=200)
    parser.add_argument("--public-ip", default="127.0.0.1")
    parser.add_argument("--coolify-version", default=None, help="what GET /version answers (default 4.3.11)")
    args = parser.parse_args(argv)

    emu = CoolifyEmulator(host=args.host, port=args.port, proxy_port=args.proxy_port, docker=args.docker,
                          action_delay=args.action_delay, rate_limit=args.rate_limit, public_ip=args.public_ip,
                          **({"version": args.coolify_version} if args.coolify_version else {}))
    for token in args.token:
        emu.add_token(token, tuple(a.strip() for a in args.abilities.split(",") if a.strip()))
    emu.start()
    # The token is never printed: only how many were registered.
    print(f"Coolify emulator: {emu.base_url}  proxy: {emu.proxy_url}  tokens: {len(args.token)}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
