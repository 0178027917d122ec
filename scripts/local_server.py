"""The release `zeroshot serve` on a throw-away SQLite database, local storage and a
free port, for the measurement scripts beside this file."""
import contextlib
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BINARY = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release" / "zeroshot"


@contextlib.contextmanager
def local_server(tmp, extra_args=(), binary=BINARY, stderr=subprocess.DEVNULL,
                 database_url=None, data_dir=None):
    """Yields (base_url, api_key, process) once the model is loaded; stops it after.
    `stderr` takes the server's log (a file object), dropped by default. Instances
    given one `database_url` and `data_dir` share their jobs (the key is printed by
    the first only: None for the others)."""
    process = subprocess.Popen(
        [str(binary), "serve", "--port", "0",
         "--database-url", database_url or f"sqlite://{tmp}/db.sqlite",
         "--data-dir", data_dir or f"{tmp}/data", *extra_args],
        stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        key = base = None
        for line in process.stdout:
            if "(shown once): " in line:
                key = line.split("(shown once): ")[1].strip()
            if line.startswith("listening on "):
                base = line.split("listening on ")[1].strip()
                break
        if base is None:
            raise SystemExit(f"{binary} exited before listening (build it with cargo build --release)")
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/readyz")
                break
            except (urllib.error.URLError, OSError):
                if time.time() > deadline:
                    raise SystemExit("server not ready after 60 s")
                time.sleep(0.1)
        yield base, key, process
    finally:
        process.terminate()
        process.wait()
