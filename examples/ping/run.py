"""Run the ping example end to end: start the Pong cell, call it, stop it.

Uses a private socket directory so it never touches a running mesh.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="cellmesh-ping-") as run_dir:
        env = dict(os.environ, CELL_SOCKET_DIR=run_dir)
        cell = subprocess.Popen([sys.executable, str(HERE / "pong_cell.py")], env=env)
        try:
            socket_path = Path(run_dir) / "pong.sock"
            deadline = time.monotonic() + 20
            while not socket_path.exists():
                if cell.poll() is not None or time.monotonic() > deadline:
                    print("the pong cell did not start", file=sys.stderr)
                    return 1
                time.sleep(0.01)
            caller = subprocess.run([sys.executable, str(HERE / "caller.py")], env=env, check=False)
            if caller.returncode != 0:
                return caller.returncode
        finally:
            cell.send_signal(signal.SIGTERM)
            cell.wait(timeout=10)
        return cell.returncode


if __name__ == "__main__":
    sys.exit(main())
