"""A virtual environment under $ZEROSHOT_CACHE holding exactly the pinned packages,
created once and made again when the pins change; shared by the scripts that need
packages from PyPI (stdlib only)."""
import os
import subprocess
import sys
from pathlib import Path


def cache_dir():
    return Path(os.environ.get("ZEROSHOT_CACHE") or Path.home() / ".cache" / "zeroshot")


def pinned_venv(name, requirements, log):
    """Returns (venv directory, its python), installing `requirements` when needed."""
    venv = cache_dir() / name
    python = venv / "bin" / "python"
    stamp = venv / "requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        log(f"creating {venv} with {' '.join(requirements)}")
        # Standard output stays clean: `setup.py --print-env` is read by the shell.
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                       stdout=sys.stderr)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", "--only-binary=:all:", *requirements],
                       check=True, stdout=sys.stderr)
        stamp.write_text(wanted)
    return venv, python


def run_inside(name, requirements, log):
    """Re-executes the running script, with its arguments, inside the venv `name`
    (made with `pinned_venv`); returns when it already runs there."""
    venv, python = pinned_venv(name, requirements, log)
    if Path(sys.prefix).resolve() == venv.resolve():
        return
    os.execv(str(python), [str(python), str(Path(sys.argv[0]).resolve()), *sys.argv[1:]])
