#!/usr/bin/env python3
"""Contract test: Schemathesis against a running zeroshot server's own OpenAPI
description (tests/it/openapi.rs starts the server and runs this).

Every operation in /openapi.json gets schema-valid and schema-violating requests
(`--mode all`, with the coverage phase's boundary values), authenticated with the
given key, and every check Schemathesis has (`--checks all`). The run fails when a
response is a 5xx, carries a status, header or content type the description does not
list for that operation, has a body that does not match its schema, when
schema-violating data is accepted or schema-valid data refused (the description states
each rule the server enforces), when an operation that needs the key answers without
it, or a deleted resource is still there.

The two rules JSON Schema cannot say (a text of only invisible characters is empty;
`/v1/usage`'s 366-day window) are let through by scripts/contract_hooks.py, narrowly:
see there.

The launcher is stdlib only: it creates (once) a virtual environment under
${ZEROSHOT_CACHE:-~/.cache/zeroshot}/venv-schemathesis with pinned packages and runs
Schemathesis from it.

Usage:
  scripts/contract_test.py --url http://127.0.0.1:8080 --api-key KEY [--max-examples N]
      [--seed N] [--report-dir DIR]
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pinned_venv import pinned_venv  # noqa: E402

# schemathesis and everything it pulls in, exactly.
REQUIREMENTS = [
    "schemathesis==4.32.5", "anyio==4.16.0", "certifi==2026.10.19.post1",
    "charset-normalizer==3.5.3", "click==8.5.1", "graphql-core==3.3.2", "harfile==0.6.0",
    "hypothesis==6.170.17", "hypothesis-graphql==0.13.5", "idna==3.20", "iniconfig==2.3.1",
    "jsonschema_rs==0.60.3", "markdown-it-py==4.3.0", "MarkupSafe==3.0.4", "mdurl==0.1.2",
    "packaging==26.4", "pluggy==1.7.0", "Pygments==2.21.0", "pyrate-limiter==4.5.1",
    "pytest==9.2.0", "PyYAML==6.0.4", "requests==2.34.2", "rich==15.0.0",
    "sortedcontainers==2.4.0", "typing_extensions==4.16.0", "urllib3==2.8.0",
    "Werkzeug==3.1.9",
]

HOOKS = Path(__file__).resolve().parent / "contract_hooks.py"


def log(msg):
    print(f"contract_test: {msg}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the server's base URL")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--max-examples", type=int, default=100,
                        help="test cases per operation and phase (default 100)")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("ZEROSHOT_CONTRACT_SEED", 1)),
                        help="Hypothesis seed: fixed by default so a run can be repeated")
    parser.add_argument("--report-dir", default=None,
                        help="where to write the JUnit report (default: none)")
    args = parser.parse_args()

    venv, _ = pinned_venv("venv-schemathesis", REQUIREMENTS, log)
    command = [
        str(venv / "bin" / "st"), "run", f"{args.url}/openapi.json",
        "--checks", "all",
        "--mode", "all",
        # Stateful: sequences that follow the description's links (create a job or a
        # classifier, then read, start, update or delete it).
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(args.max_examples),
        "--seed", str(args.seed),
        # One worker: Hypothesis' lambda descriptions call ast.parse, which CPython
        # 3.11 cannot run on two threads at once (SystemError: AST constructor
        # recursion depth mismatch).
        "--workers", "1",
        "--request-timeout", "30",
        "--header", f"Authorization: Bearer {args.api_key}",
        "--suppress-health-check", "all",
        "--no-color",
    ]
    if args.report_dir:
        command += ["--report", "junit", "--report-dir", args.report_dir]
    log(f"seed {args.seed}; {' '.join(c if 'Bearer' not in c else 'Authorization: Bearer ***' for c in command)}")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}
    sys.exit(subprocess.run(command, env=env).returncode)


if __name__ == "__main__":
    main()
