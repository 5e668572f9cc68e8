"""Echo server: the classic socket-programming example, exchanging Python objects.

    python examples/echo_server.py [--port PORT] [--authkey KEY]

Each client sends objects; the server sends each one back, and a summary when
the client sends the string "bye". ``--port 0`` picks a free port; the
address is printed on the first line so a script can connect to it. Stop
with Ctrl-C.
"""

import argparse
import threading

from fastwire.net import AuthenticationError, Listener


def serve_client(conn, peer):
    with conn:
        count = 0
        while True:
            try:
                obj = conn.recv()  # builtin value types only: a client cannot run code here
            except EOFError:
                return
            if obj == "bye":
                conn.send({"peer": str(peer), "echoed": count})
                return
            conn.send(obj)
            count += 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6000)
    parser.add_argument("--authkey", default=None, help="shared secret clients must know")
    args = parser.parse_args()
    authkey = args.authkey.encode() if args.authkey else None

    with Listener((args.host, args.port), backlog=16, authkey=authkey) as listener:
        print(f"listening on {listener.address[0]}:{listener.address[1]}", flush=True)
        try:
            while True:
                try:
                    conn = listener.accept()
                except (AuthenticationError, OSError) as exc:  # one bad client must not stop the server
                    print(f"refused a client: {exc!r}", flush=True)
                    continue
                threading.Thread(target=serve_client, args=(conn, listener.last_accepted),
                                 daemon=True).start()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
