"""Echo client: sends a few Python objects to examples/echo_server.py and checks the echoes.

    python examples/echo_client.py [--port PORT] [--authkey KEY]
"""

import argparse
import sys

from fastwire.net import Client

MESSAGES = [
    "hello",
    42,
    3.5,
    [1, 2, 3],
    {"user": "ada", "scores": (98, 87), "active": True},
    b"\x00binary\xff" * 1000,
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6000)
    parser.add_argument("--authkey", default=None)
    args = parser.parse_args()
    authkey = args.authkey.encode() if args.authkey else None

    with Client((args.host, args.port), authkey=authkey, timeout=30) as conn:
        for message in MESSAGES:
            conn.send(message)
            echoed = conn.recv()
            status = "ok" if echoed == message else "MISMATCH"
            print(f"{status}: {echoed!r:.60}")
            if echoed != message:
                return 1
        conn.send_many(MESSAGES)  # a whole batch in one system call
        if [conn.recv() for _ in MESSAGES] != MESSAGES:
            print("MISMATCH in batch")
            return 1
        print(f"ok: batch of {len(MESSAGES)}")
        conn.send("bye")
        print(f"summary: {conn.recv()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
