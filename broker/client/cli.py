"""`broker client …`: the partner client from the command line, for trying the API and for scripts.

Each command prints JSON on stdout. A refusal exits 1 with the problem's code and detail on stderr (and the problem
document, which says more — a refused disclosure's decision); a usage error exits 2.

The partner is named either by a demo instance (`--demo-instance DIR --partner ID`, from DIR/demo.json) or in full
(`--base-url`, `--client-id`, `--key FILE`, `--actor`, `--role`). Only argparse is imported at module level: the
`broker` command builds its parser on every start, and this module must not make that slower.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broker.client.client import BrokerClient

EXIT_REFUSED = 1
EXIT_USAGE = 2


class _UsageError(Exception):
    pass


def add_client_commands(commands: Any) -> None:
    """Add `client` and its subcommands to the `broker` command's subparsers."""
    client = commands.add_parser(
        "client",
        help="call the broker as a partner system (private_key_jwt, DPoP, retries): docs/api.md",
        description="Call the broker as a partner system. Output is JSON; a refusal exits 1 with its code on stderr.",
    )
    sub = client.add_subparsers(dest="client_command", required=True)
    common = _connection_options()

    def add(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        command: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    add(
        "token",
        cmd_client_token,
        "obtain an access token and print the token response (the token is bound to a DPoP key that lives only "
        "as long as this command, so it is of no use to anyone afterwards)",
    )
    get = add("get", cmd_client_get, "GET a path of the API, e.g. /api/v1/inbox")
    get.add_argument("path", metavar="PATH", help="the path under the base URL, with any query")
    post = add("post", cmd_client_post, "POST JSON to a path of the API, with an Idempotency-Key and retries")
    post.add_argument("path", metavar="PATH", help="the path under the base URL, e.g. /api/v1/decisions")
    post.add_argument("json", metavar="JSON", help="the body: JSON text, @FILE, or - for standard input")
    post.add_argument("--idempotency-key", default=None, help="the key to send (default: a new UUID)")
    disclose = add("disclose", cmd_client_disclose, "ask for a person's records of a category for a purpose")
    disclose.add_argument("--person", required=True, help="the person_id")
    disclose.add_argument("--category", required=True, help="the record category, e.g. work_assessment")
    disclose.add_argument("--purpose", required=True, help="the purpose, e.g. work_capacity_assessment")
    disclose.add_argument("--idempotency-key", default=None, help="the key to send (default: a new UUID)")
    verify = add(
        "verify-event",
        cmd_client_verify_event,
        "verify a Security Event Token the broker pushed to a webhook and print its event",
    )
    verify.add_argument("file", metavar="FILE", help="the request body as received, or - for standard input")
    verify.add_argument("--jwks", type=Path, default=None, help="verify with this JWK Set instead of fetching it")


def _connection_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    demo = options.add_argument_group("a demo partner")
    demo.add_argument("--demo-instance", type=Path, metavar="DIR", help="a demo instance folder (its demo.json)")
    demo.add_argument("--partner", metavar="ID", help="the demo partner's client_id, e.g. varha-health")
    explicit = options.add_argument_group("any partner")
    explicit.add_argument("--base-url", help="where the broker is reached, e.g. https://broker.example")
    explicit.add_argument("--issuer", help="the broker's issuer identifier (default: from its metadata)")
    explicit.add_argument("--client-id", help="your client_id")
    explicit.add_argument("--key", type=Path, metavar="FILE", help="your registered private key (a JWK file)")
    explicit.add_argument("--organisation", help="your organisation (events must be addressed to it)")
    acting = options.add_argument_group("the acting professional (default for a demo partner: its demo professional)")
    acting.add_argument("--actor", metavar="STAFF_ID", help="the professional's staff id")
    acting.add_argument("--role", help="the professional's role, one the policy knows for your organisation type")
    transport = options.add_argument_group("transport")
    transport.add_argument("--timeout", type=float, default=10.0, help="seconds per attempt (default 10)")
    transport.add_argument("--retries", type=int, default=3, help="retries after the first attempt (default 3)")
    return options


def cmd_client_token(args: argparse.Namespace) -> int:
    def run(client: BrokerClient) -> Any:
        token = client.token()
        return {
            "access_token": token.value,
            "token_type": token.token_type,
            "expires_in": token.expires_in,
            "scope": token.scope,
            "dpop_jkt": client.dpop_thumbprint,
        }

    return _run(args, run)


def cmd_client_get(args: argparse.Namespace) -> int:
    return _run(args, lambda client: client.get(args.path))


def cmd_client_post(args: argparse.Namespace) -> int:
    def run(client: BrokerClient) -> Any:
        return client.post(args.path, _json_argument(args.json), idempotency_key=args.idempotency_key)

    return _run(args, run)


def cmd_client_disclose(args: argparse.Namespace) -> int:
    def run(client: BrokerClient) -> Any:
        return client.disclose(args.person, args.category, args.purpose, idempotency_key=args.idempotency_key)

    return _run(args, run)


def cmd_client_verify_event(args: argparse.Namespace) -> int:
    def run(client: BrokerClient) -> Any:
        body = sys.stdin.buffer.read() if args.file == "-" else _read(Path(args.file)).encode("utf-8")
        jwks = json.loads(_read(args.jwks)) if args.jwks is not None else None
        event = client.verify_event(body, jwks)
        return {
            "id": event.id,
            "type": event.type,
            "organisation": event.organisation,
            "person_id": event.person_id,
            "occurred_at": event.occurred_at.isoformat() if event.occurred_at else None,
            "data": event.data,
        }

    return _run(args, run)


def _run(args: argparse.Namespace, action: Any) -> int:
    from broker.client.errors import BrokerError

    try:
        client = _client(args)
    except (_UsageError, ValueError) as error:
        print(f"broker client: {error}", file=sys.stderr)
        return EXIT_USAGE
    with client:
        try:
            result = action(client)
        except BrokerError as error:
            print(f"{error.code}: {error.detail or error.title}", file=sys.stderr)
            if error.problem:
                print(json.dumps(error.problem, indent=2, ensure_ascii=False), file=sys.stderr)
            return EXIT_REFUSED
        except (_UsageError, ValueError) as error:
            print(f"broker client: {error}", file=sys.stderr)
            return EXIT_USAGE
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def _client(args: argparse.Namespace) -> BrokerClient:
    from broker.client.client import BrokerClient, RetryPolicy

    if (args.actor is None) != (args.role is None):
        raise _UsageError("--actor and --role go together")
    acting = (args.actor, args.role) if args.actor is not None else None
    if args.retries < 0 or args.timeout <= 0:
        raise _UsageError("--retries must be 0 or more and --timeout above 0")
    options: dict[str, Any] = {"timeout": args.timeout, "retries": RetryPolicy(retries=args.retries)}
    if args.demo_instance is not None:
        if not args.partner:
            raise _UsageError("--demo-instance needs --partner (a client_id listed in its demo.json)")
        client = BrokerClient.from_demo(args.demo_instance, args.partner, acting=acting, **options)
        if args.organisation:
            client.organisation = args.organisation
        return client
    missing = [
        flag
        for flag, value in (
            ("--base-url", args.base_url),
            ("--client-id", args.client_id),
            ("--key", args.key),
            ("--actor and --role", acting),
        )
        if not value
    ]
    if missing:
        raise _UsageError(f"name the partner with --demo-instance and --partner, or give {', '.join(missing)}")
    assert acting is not None
    return BrokerClient(
        args.base_url,
        args.client_id,
        args.key,
        acting=acting,
        issuer=args.issuer,
        organisation=args.organisation,
        **options,
    )


def _json_argument(text: str) -> Any:
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        text = _read(Path(text[1:]))
    try:
        return json.loads(text)
    except ValueError as error:
        raise _UsageError(f"the body is not JSON: {error}") from None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise _UsageError(f"cannot read {path}: {error.strerror}") from None
