"""Profile the disclosure path in one process (no HTTP server): a fresh demo instance in a temporary folder,
the broker's WSGI app driven by Flask's test client, N disclosures of Mikko's work assessment to
`varha-health`, under pyinstrument (`pip install pyinstrument`; not a dependency of the broker).

    python -m bench.profile_disclosure [-n 2000] [--html out.html]

Shows where the Python time of one request goes (auth, ORM, policy, crypto, audit, serialisation, commit).
What it does not show: gunicorn's request parsing and the wait for the lock held by the other worker —
profile a served worker with py-spy for those (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.http_disclosure import ASK, PARTNER, PERSON


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_disclosure")
    parser.add_argument("-n", type=int, default=2000, help="disclosures to profile (default 2000)")
    parser.add_argument("--html", type=Path, help="also write pyinstrument's HTML report here")
    parser.add_argument("--no-profile", action="store_true", help="only time the requests")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="broker-profile-"))
    try:
        os.environ.update(
            BROKER_MODE="demo", BROKER_INSTANCE_PATH=str(workdir / "instance"), BROKER_ISSUER="http://127.0.0.1:8000"
        )
        os.environ.pop("BROKER_DATABASE_URL", None)

        from broker.app import create_app
        from broker.config import Settings
        from broker.demo import create_demo
        from broker.oauth.tokens import ClientCredentials, issue_access_token

        settings = Settings.from_env()
        create_demo(settings)
        demo = json.loads((settings.instance_path / "demo.json").read_text())
        person_id = next(p["person_id"] for p in demo["persons"] if p["name"] == PERSON)
        app = create_app(settings)
        broker = app.extensions["broker"]

        from bench.http_disclosure import build_assertion

        partner = next(p for p in demo["partners"] if p["client_id"] == PARTNER)
        assertion = build_assertion(settings.instance_path, partner, settings.issuer)
        from broker.oauth.tokens import ASSERTION_TYPE

        issued = issue_access_token(
            broker,
            ClientCredentials(client_assertion_type=ASSERTION_TYPE, client_assertion=assertion, client_id=None),
            grant_type="client_credentials",
            scope="disclosures",
        )
        client = app.test_client()
        headers = {"Authorization": f"Bearer {issued.access_token}"}
        body = {"person_id": person_id, **ASK}

        def run(n: int) -> None:
            for _ in range(n):
                response = client.post("/api/v1/disclosures", json=body, headers=headers)
                if response.status_code != 200:
                    raise SystemExit(f"{response.status_code} {response.get_data(as_text=True)}")

        run(50)  # warm-up
        profiler = None
        if not args.no_profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005)
            profiler.start()
        started = time.perf_counter()
        run(args.n)
        elapsed = time.perf_counter() - started
        if profiler is not None:
            profiler.stop()
            print(profiler.output_text(unicode=True, color=False, show_all=False))
            if args.html:
                args.html.write_text(profiler.output_html())
        print(f"{args.n} disclosures in {elapsed:.2f} s: {1000 * elapsed / args.n:.2f} ms each (one process)")
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
