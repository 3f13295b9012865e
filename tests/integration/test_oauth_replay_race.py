"""Single use under concurrency: one assertion sent eight times at once gets exactly one token.

Run against the real app and a real database — a SQLite file, and PostgreSQL when BROKER_TEST_POSTGRES_URL
is set (PITFALLS.md: SQLite serialises writers and hides races that PostgreSQL exposes)."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from broker.adapters.orm import AccessTokenRow, AssertionJtiRow
from broker.oauth.assertion import ASSERTION_TYPE
from tests.integration.conftest_oauth import RACE_BACKENDS, TOKEN_URL, open_test_bed

REPLAYS = 8
TRIALS = 5


@pytest.mark.parametrize("backend", RACE_BACKENDS)
def test_eight_concurrent_replays_of_one_assertion_get_exactly_one_token(backend: str, tmp_path: Path) -> None:
    with open_test_bed(backend, tmp_path) as bed:
        partner = bed.add_partner("kisalli")
        for trial in range(TRIALS):
            form = {
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": bed.assertion(partner),
            }
            start = threading.Barrier(REPLAYS)

            def replay(form: dict[str, str] = form, start: threading.Barrier = start) -> tuple[int, str]:
                client = bed.app.test_client()
                proof = bed.dpop.proof("POST", TOKEN_URL)  # each its own DPoP proof: only the assertion repeats
                start.wait()  # all requests leave together
                response = client.post("/oauth/token", data=form, headers={"DPoP": proof})
                body = response.get_json()
                return response.status_code, body.get("error", "")

            with ThreadPoolExecutor(max_workers=REPLAYS) as pool:
                outcomes = Counter(future.result() for future in [pool.submit(replay) for _ in range(REPLAYS)])
            assert outcomes == Counter({(200, ""): 1, (401, "invalid_client"): REPLAYS - 1}), f"trial {trial}"

        with bed.broker.uow(write=False) as uow:
            tokens = uow.session.scalar(select(func.count()).select_from(AccessTokenRow))
            jtis = uow.session.scalar(select(func.count()).select_from(AssertionJtiRow))
        assert (tokens, jtis) == (TRIALS, TRIALS)
