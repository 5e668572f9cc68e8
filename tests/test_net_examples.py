"""The echo example runs: a real server process and a real client process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("authkey", [None, "s3cret"])
def test_echo_server_and_client(authkey):
    extra = ["--authkey", authkey] if authkey else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    server = subprocess.Popen([sys.executable, str(EXAMPLES / "echo_server.py"), "--port", "0", *extra],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        first = server.stdout.readline()
        assert first.startswith("listening on "), first
        port = first.rsplit(":", 1)[1].strip()
        client = subprocess.run([sys.executable, str(EXAMPLES / "echo_client.py"), "--port", port, *extra],
                                capture_output=True, text=True, timeout=60, env=env)
        assert client.returncode == 0, client.stdout + client.stderr
        lines = client.stdout.splitlines()
        assert all(line.startswith("ok: ") for line in lines[:6]), lines
        assert len(lines) == 8 and lines[6] == "ok: batch of 6"
        assert lines[7].startswith("summary: {") and "'echoed': 12" in lines[7]
    finally:
        server.kill()
        server.wait()


def test_echo_client_with_wrong_authkey_is_refused():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    server = subprocess.Popen([sys.executable, str(EXAMPLES / "echo_server.py"), "--port", "0",
                               "--authkey", "right"], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        port = server.stdout.readline().rsplit(":", 1)[1].strip()
        client = subprocess.run([sys.executable, str(EXAMPLES / "echo_client.py"), "--port", port,
                                 "--authkey", "wrong"], capture_output=True, text=True, timeout=60, env=env)
        assert client.returncode != 0
        assert "AuthenticationError" in client.stderr
        # The server survives a refused client and still serves the next one.
        good = subprocess.run([sys.executable, str(EXAMPLES / "echo_client.py"), "--port", port,
                               "--authkey", "right"], capture_output=True, text=True, timeout=60, env=env)
        assert good.returncode == 0, good.stdout + good.stderr
    finally:
        server.kill()
        server.wait()
