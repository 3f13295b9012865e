"""POST /disclosures answers exactly as it did when flask-smorest's and webargs' decorators did its reading and
writing (broker/http/api/views.py, "POST /disclosures, the broker's hot path"): the same bytes and headers for an
answer, the same problem for a refused body, the same stored and replayed response for an Idempotency-Key, and the
same OpenAPI document.

"Before" is not a recording: `reference_post` declares the view as it was declared before, with flask-smorest's
own decorators, and each test sends the same requests to both (swapping the method on the view class).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.views import MethodView
from werkzeug.test import TestResponse

from broker.http.api import current_broker, current_caller, views
from broker.oauth import require_scope
from broker.services import disclosures
from schemas import api as s
from tests.integration.test_api_disclosures import consent_to_health, deposit
from tests.support import Env

# The request bodies and answers the unit tests compare the fast path on.
from tests.unit.test_disclosure_fast_path import EXCEPTION, GOOD, answer, basis, record

# Headers that differ from one request to the next whatever answers it.
VARYING = {"X-Request-Id", "RateLimit"}
PROBLEM_CODES = (400, 401, 403, 404)


def alt_responses_as_before(view: Any, codes: tuple[int, ...]) -> Any:
    """The problem responses as `_responses` documented them before: one flask-smorest wrapper per code."""
    for code in (*codes, *views.EVERY_OPERATION):
        view = views.blp.alt_response(
            code,
            schema=s.ProblemSchema,
            description=views.PROBLEMS.get(str(code), ""),
            content_type="application/problem+json",
        )(view)
    return view


def reference_post() -> Callable[..., Any]:
    """`Disclosures.post` as it was declared before the fast path."""

    def post(self: Any, body: dict[str, Any]) -> dict[str, Any]:
        ask = disclosures.DisclosureAsk(
            body["person_id"], body["category"], body["purpose"], disclosures.parse_exception(body["exception"])
        )
        return disclosures.request_disclosure(current_broker(), current_caller(), ask)

    post.__doc__ = views.Disclosures.post.__doc__
    view = alt_responses_as_before(post, PROBLEM_CODES)
    view = views.blp.response(200, s.DisclosureSchema)(view)
    view = views.blp.arguments(s.DisclosureRequestSchema())(view)
    view = views.idempotent(view)
    protected: Callable[..., Any] = require_scope("disclosures")(view)
    return protected


@pytest.fixture
def both(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], TestResponse]], tuple[TestResponse, TestResponse]]:
    """Send a request (a function of no arguments) to today's view, then to the reference one."""
    reference = reference_post()

    def send(request: Callable[[], TestResponse]) -> tuple[TestResponse, TestResponse]:
        ours = request()
        with monkeypatch.context() as patch:
            patch.setattr(views.Disclosures, "post", reference)
            theirs = request()
        return ours, theirs

    return send


def headers(response: TestResponse) -> list[tuple[str, str]]:
    return [(name, value) for name, value in response.headers if name not in VARYING]


def without_request_id(response: TestResponse) -> Any:
    problem = response.get_json()
    assert problem.pop("request_id")
    return problem


ANSWERS = {
    "one record": answer(),
    "several records, on two bases": answer(
        records=[record(1), record(2, source_organisation="varha", basis=basis(kind="statute", consent_id=None))]
    ),
    "no records": answer(records=[]),
    "no basis": answer(basis=None, records=[record(1, basis=None)]),
    "obligations": answer(obligations=["notify_person", "log_access"]),
    "a statutory exception": answer(basis=basis(kind="exception", consent_id=None, exception_ground="vital_interest")),
    "a member missing": {k: v for k, v in answer().items() if k != "obligations"},
}


@pytest.fixture
def canned(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, Any]], list[Any]]]:
    """Make the use case answer `given` (and remember what it was asked), so that the two views' answers can be
    compared byte for byte: a real disclosure has a new id each time."""

    def answering(given: dict[str, Any]) -> list[Any]:
        asked: list[Any] = []

        def request_disclosure(broker: Any, caller: Any, ask: disclosures.DisclosureAsk) -> dict[str, Any]:
            asked.append(ask)
            return given

        monkeypatch.setattr(disclosures, "request_disclosure", request_disclosure)
        return asked

    yield answering


@pytest.mark.parametrize("case", ANSWERS)
@pytest.mark.parametrize("body", [GOOD, GOOD | {"exception": None}, GOOD | {"exception": EXCEPTION}])
def test_an_answer_has_the_same_bytes_and_headers_as_before(
    env: Env, both: Any, canned: Any, case: str, body: dict[str, Any]
) -> None:
    asked = canned(ANSWERS[case])
    ours, theirs = both(lambda: env.post("varha-health", "/disclosures", body))
    assert ours.status_code == theirs.status_code == 200
    assert headers(ours) == headers(theirs)
    assert ours.get_data() == theirs.get_data()
    assert ours.headers["Content-Type"] == "application/json"
    assert ours.headers["Content-Length"] == str(len(ours.get_data()))
    [ask_ours, ask_theirs] = asked  # the use case was asked the same thing
    assert ask_ours == ask_theirs


REFUSED: list[tuple[bytes, str | None]] = [
    (json.dumps(GOOD | {"extra": 1}).encode(), "application/json"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "purpose"}).encode(), "application/json"),
    (json.dumps(GOOD | {"person_id": "per\x00"}).encode(), "application/json"),
    (json.dumps(GOOD | {"person\x00id": "x"}).encode(), "application/json"),
    (json.dumps(GOOD | {"person_id": "p" * 41}).encode(), "application/json"),
    (json.dumps(GOOD | {"category": ""}).encode(), "application/json"),
    (json.dumps(GOOD | {"purpose": 7}).encode(), "application/json"),
    (json.dumps(GOOD | {"exception": {}}).encode(), "application/json"),
    (json.dumps(GOOD | {"exception": "vital_interest"}).encode(), "application/json"),
    (json.dumps(GOOD | {"exception": EXCEPTION | {"extra": 1}}).encode(), "application/json"),
    (json.dumps(GOOD | {"exception": EXCEPTION | {"justification": "too short"}}).encode(), "application/json"),
    (json.dumps(GOOD | {"exception": EXCEPTION | {"justification": "j" * 2001}}).encode(), "application/json"),
    (json.dumps(GOOD | {"exception": EXCEPTION | {"ground": "g\x00"}}).encode(), "application/json"),
    (json.dumps([GOOD]).encode(), "application/json"),
    (b"null", "application/json"),
    (b"", "application/json"),
    (b"{", "application/json"),
    (b'{"person_id": "\xff"}', "application/json"),
    (json.dumps(GOOD).encode(), "text/plain"),
    (json.dumps(GOOD).encode(), None),
    (b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), "application/json"),
]


@pytest.mark.parametrize(("data", "content_type"), REFUSED)
def test_a_refused_body_gets_the_same_problem_as_before(
    env: Env, both: Any, canned: Any, data: bytes, content_type: str | None
) -> None:
    asked = canned(answer())
    ours, theirs = both(
        lambda: env.call("varha-health", "POST", "/api/v1/disclosures", data=data, content_type=content_type)
    )
    assert ours.status_code == theirs.status_code == 400
    assert headers(ours) == headers(theirs)
    assert without_request_id(ours) == without_request_id(theirs)
    assert ours.get_json()["code"] in ("invalid_request", "invalid_json")
    assert asked == []


def test_a_json_body_of_another_json_media_type_is_still_read(env: Env, both: Any, canned: Any) -> None:
    canned(answer())
    data = json.dumps(GOOD).encode()
    ours, theirs = both(
        lambda: env.call(
            "varha-health", "POST", "/api/v1/disclosures", data=data, content_type="application/merge-patch+json"
        )
    )
    assert ours.status_code == theirs.status_code == 200
    assert ours.get_data() == theirs.get_data()


def test_an_unauthenticated_request_is_refused_before_its_body_is_read(env: Env, both: Any, canned: Any) -> None:
    asked = canned(answer())
    ours, theirs = both(lambda: env.post(None, "/disclosures", {"junk": True}))
    assert ours.status_code == theirs.status_code == 401
    assert headers(ours) == headers(theirs) and without_request_id(ours) == without_request_id(theirs)
    assert asked == []


def test_an_idempotent_answer_is_stored_and_replayed_as_before(env: Env, both: Any, canned: Any) -> None:
    # A replay re-sends record content only while the consents it names are active: this answer names none.
    statute = basis(kind="statute", rule="F5", consent_id=None, consent_version=None)
    canned(answer(basis=statute, obligations=["log_access"], records=[record(1, basis=statute), record(2, basis=None)]))
    keys = iter(['"first-key"', '"second-key"'])  # one per view: a key reused with the other view would replay

    def send_twice() -> tuple[TestResponse, TestResponse]:
        key = next(keys)
        first = env.post("varha-health", "/disclosures", GOOD, headers={"Idempotency-Key": key})
        replayed = env.post("varha-health", "/disclosures", GOOD, headers={"Idempotency-Key": key})
        assert first.status_code == replayed.status_code == 200
        assert replayed.headers["Idempotency-Replayed"] == "true"
        assert replayed.get_data() == first.get_data()
        assert sorted(headers(replayed)) == sorted([*headers(first), ("Idempotency-Replayed", "true")])
        return first, replayed

    (first, replayed), (first_before, replayed_before) = both(send_twice)
    assert headers(first) == headers(first_before) and first.get_data() == first_before.get_data()
    assert headers(replayed) == headers(replayed_before) and replayed.get_data() == replayed_before.get_data()


def permitted_person(env: Env) -> str:
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-health")
    consent_to_health(env, person_id)
    for _ in range(2):
        deposit(env, "kisalli", person_id, "work_assessment")
    return person_id


def test_a_real_disclosure_answers_as_before(env: Env, both: Any) -> None:
    body = GOOD | {"person_id": permitted_person(env)}
    ours, theirs = both(lambda: env.post("varha-health", "/disclosures", body))
    assert ours.status_code == theirs.status_code == 200, ours.get_json()
    # Two disclosures: each its own id and audit entry (whose number may have one digit more), and otherwise the
    # same headers and bytes.
    assert [h for h in headers(ours) if h[0] != "Content-Length"] == [
        h for h in headers(theirs) if h[0] != "Content-Length"
    ]
    for response in (ours, theirs):
        assert response.headers["Content-Length"] == str(len(response.get_data()))
    first, second = ours.get_json(), theirs.get_json()
    assert len(first["records"]) == 2
    assert second["audit_entry_id"] > first["audit_entry_id"]
    same = ours.get_data().replace(first["disclosure_id"].encode(), second["disclosure_id"].encode())
    same = same.replace(
        f'"audit_entry_id":{first["audit_entry_id"]},'.encode(),
        f'"audit_entry_id":{second["audit_entry_id"]},'.encode(),
    )
    assert same == theirs.get_data()


# --- the OpenAPI document ---------------------------------------------------------------------------------------------


def openapi(app: Flask) -> dict[str, Any]:
    document: dict[str, Any] = app.test_client().get("/api/v1/openapi.json").get_json()
    return document


def reference_app(*routes: tuple[str, type[MethodView]]) -> Flask:
    """An application with only `routes`, on a blueprint like the partner API's."""
    app = Flask("reference")
    app.config.update(
        API_TITLE="Consent Broker",
        API_VERSION="v1",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    api = views.PartnerApi(app)
    blueprint = views.ApiBlueprint("api", __name__, url_prefix="/api/v1", description="Consent Broker partner API")
    for path, view in routes:
        blueprint.route(path)(view)
    api.register_blueprint(blueprint)
    return app


def same_json(a: Any, b: Any) -> bool:
    return json.dumps(a) == json.dumps(b)  # the order of members too


def test_the_disclosures_operation_is_documented_as_flask_smorest_documented_it(env: Env) -> None:
    class Disclosures(MethodView):
        post = reference_post()

    reference = openapi(reference_app(("/disclosures", Disclosures)))
    actual = openapi(env.app)
    assert same_json(actual["paths"]["/api/v1/disclosures"], reference["paths"]["/api/v1/disclosures"])
    # The schemas it refers to: the request body, the answer (with Basis and DisclosedRecord) and the problems.
    assert {"DisclosureRequest", "Disclosure", "Problem"} <= set(reference["components"]["schemas"])
    for name, schema in reference["components"]["schemas"].items():
        assert same_json(actual["components"]["schemas"][name], schema), name


def test_problem_responses_are_documented_as_alt_response_documented_them() -> None:
    """`_responses` keeps flask-smorest's documentation but not its wrappers: the same operations, declared with it
    and with flask-smorest's `alt_response` wrappers, are documented alike — the way views.py and its neighbours
    stack it."""
    cases: list[tuple[tuple[int, ...], Callable[[Any], Any]]] = [
        ((), lambda view: views.blp.response(200, s.PersonSchema)(view)),
        ((401, 403, 404), lambda view: views.blp.response(200, s.ConsentReceiptSchema)(view)),
        (
            (400, 401, 403),
            lambda view: views.blp.arguments(s.PersonResolveSchema())(views.blp.response(200, s.PersonSchema)(view)),
        ),
        (
            (400, 401, 403, 404, 409),
            lambda view: views.idempotent(
                views.blp.arguments(s.ConsentWithdrawSchema())(views.blp.response(200, s.ConsentSchema)(view))
            ),
        ),
        (
            (400, 401, 403, 404),
            lambda view: views.blp.arguments(s.ConsentListQuerySchema(), location="query")(
                views.blp.response(200, s.ConsentSchema(many=True))(view)
            ),
        ),
        (
            (401, 403),
            lambda view: views.blp.doc(security=[])(
                views.blp.response(200, s.PersonSchema, content_type="application/fhir+json", description="x")(view)
            ),
        ),
    ]
    routes: list[tuple[str, type[MethodView]]] = []

    def operation() -> Callable[..., Any]:
        # A function for each declaration: `_responses` gives its documentation to the function it is given.
        def post(self: Any) -> Any:
            """Summary.

            Description."""

        return post

    for number, (codes, outer) in enumerate(cases):
        ours = outer(views._responses(*codes)(operation()))
        theirs = outer(alt_responses_as_before(operation(), codes))
        routes.append((f"/ours/{number}", type(f"Ours{number}", (MethodView,), {"post": ours})))
        routes.append((f"/theirs/{number}", type(f"Theirs{number}", (MethodView,), {"post": theirs})))
    document = openapi(reference_app(*routes))
    for number in range(len(cases)):
        ours_doc = document["paths"][f"/api/v1/ours/{number}"]
        theirs_doc = document["paths"][f"/api/v1/theirs/{number}"]
        assert same_json(ours_doc, theirs_doc), number
        assert set(ours_doc["post"]["responses"]) >= {str(code) for code in views.EVERY_OPERATION}
