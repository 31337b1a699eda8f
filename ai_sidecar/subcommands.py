"""The parsers of ``scout-sidecar user``, ``report`` and ``llm``, with light imports.

Their commands' code lives in packages whose imports start the console, the
store or the LLM providers; every command line builds every parser (``--help``
lists them all), so the parsers are here and name their run functions with
:func:`~ai_sidecar.pipes.deferred`: that code loads only for its own command.
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from ai_sidecar.clock import utc_now
from ai_sidecar.i18n import available_languages, catalogue_language
from ai_sidecar.periods import REPORT_PERIODS
from ai_sidecar.pipes import deferred
from exporter.common.durations import parse_duration

# Where each group's run functions are.
USER_COMMANDS = "ai_sidecar.console.login.commands"
REPORT_COMMAND = "ai_sidecar.console.reports.command"
LLM_COMMANDS = "ai_sidecar.enrichment.llm.commands"

ROLES = ["viewer", "operator"]
ROLE_HELP = "viewer reads; operator also gives feedback, acknowledges and silences"

FORMATS = ("pdf", "html", "csv")


def add_user_commands(subparsers: Any) -> None:
    """Add the ``user`` group to the root parser's commands."""
    group = subparsers.add_parser(
        "user",
        help="the console's users: add, list, remove, change a password or a role",
        description="Manage the console's users in the sidecar's store.",
        epilog=(
            "Uses the store serve uses: SCOUT_STORE_URL (PostgreSQL, with "
            "SCOUT_STORE_PASSWORD or SCOUT_STORE_PASSWORD_FILE) or the SQLite file in "
            "SCOUT_DATA_DIR (default ./data). Users in console.users_file win over "
            "stored users of the same name."
        ),
    )
    commands = group.add_subparsers(dest="user_command", metavar="COMMAND", required=True)
    add = commands.add_parser("add", help="add a user", description="Add a console user.")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", required=True, choices=ROLES, help=ROLE_HELP)
    _password_source(add)
    add.set_defaults(run=deferred(USER_COMMANDS, "run_add"))
    listing = commands.add_parser(
        "list", help="list stored users and their roles", description="List stored users."
    )
    listing.set_defaults(run=deferred(USER_COMMANDS, "run_list"))
    remove = commands.add_parser(
        "remove", help="remove a user and end their sessions", description="Remove a user."
    )
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(run=deferred(USER_COMMANDS, "run_remove"))
    passwd = commands.add_parser(
        "passwd",
        help="set a user's password (their sessions end)",
        description="Set a stored user's password; the user's open sessions end.",
    )
    passwd.add_argument("name", metavar="NAME")
    _password_source(passwd)
    passwd.set_defaults(run=deferred(USER_COMMANDS, "run_passwd"))
    role = commands.add_parser(
        "role",
        help="change a user's role (effective at their next page)",
        description="Change a stored user's role; their open sessions get it at once.",
    )
    role.add_argument("name", metavar="NAME")
    role.add_argument("role", metavar="ROLE", choices=ROLES, help=ROLE_HELP)
    role.set_defaults(run=deferred(USER_COMMANDS, "run_role"))


def _password_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )
    source.add_argument(
        "--password-file", type=Path, metavar="FILE", help="read the password from FILE"
    )
    source.add_argument(
        "--generate",
        action="store_true",
        help="generate a strong password and print it once on standard output",
    )


def add_report_command(subparsers: Any) -> None:
    command = subparsers.add_parser(
        "report",
        help="write a report (incidents, noise, response times, feedback) as PDF, HTML or CSV",
        description=(
            "Write the report of a day, a week or a month, ending now or at the end of --end, "
            "in the config's notifications.timezone."
        ),
        epilog=(
            "Reads the store serve uses: SCOUT_STORE_URL (PostgreSQL, with SCOUT_STORE_PASSWORD "
            "or SCOUT_STORE_PASSWORD_FILE) or the SQLite file in SCOUT_DATA_DIR (default ./data); "
            "Prometheus from SCOUT_PROMETHEUS_URL, when set."
        ),
    )
    command.add_argument(
        "--period", choices=REPORT_PERIODS, default="week", help="how long a period (default week)"
    )
    command.add_argument(
        "--format", choices=FORMATS, default="pdf", help="what to write (default pdf)"
    )
    command.add_argument(
        "--output",
        type=Path,
        required=True,
        metavar="FILE",
        help="where to write it (- for stdout)",
    )
    command.add_argument(
        "--end",
        type=_end_date,
        metavar="YYYY-MM-DD",
        help="the last day of the period (default: the period ends now)",
    )
    command.add_argument(
        "--language",
        # A language tag in any case (FR, En): the choice is checked after this.
        type=lambda tag: catalogue_language(tag) or tag,
        choices=available_languages(),
        default=None,
        help="the language of the PDF and HTML (default: the config's language; CSV: English)",
    )
    command.add_argument(
        "--config.file",
        dest="config_file",
        type=Path,
        default=None,
        metavar="FILE",
        help="the sidecar's config (notifications.timezone, reports)",
    )
    command.set_defaults(run=deferred(REPORT_COMMAND, "run_report"))


def _end_date(text: str) -> date:
    # Imported when --end is given: its package starts the console.
    from ai_sidecar.console.reports.period import parse_end_date

    try:
        return parse_end_date(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_llm_commands(subparsers: Any) -> None:
    """Add the ``llm`` group (``llm audit``) to the root parser's commands."""
    group = subparsers.add_parser(
        "llm",
        help="the LLM analysts: export the audit of their exchanges",
        description="LLM analyst commands.",
    )
    commands = group.add_subparsers(dest="llm_command", metavar="COMMAND", required=True)
    audit = commands.add_parser(
        "audit",
        help="export the kept LLM exchanges as JSON lines",
        description=(
            "Write the kept LLM exchanges (redacted prompt, answer, provider, model, tokens, "
            "cost, latency, outcome) made since a time, oldest first, one JSON object per line."
        ),
        epilog=(
            "Reads the store serve uses: SCOUT_STORE_URL (PostgreSQL, with "
            "SCOUT_STORE_PASSWORD or SCOUT_STORE_PASSWORD_FILE) or the SQLite file in "
            "SCOUT_DATA_DIR (default ./data)."
        ),
    )
    audit.add_argument(
        "--since",
        required=True,
        type=lambda text: parse_since(text, utc_now()),
        metavar="DURATION|TIME",
        help="how far back: a duration (24h, 7d) or an RFC 3339 time with a zone",
    )
    audit.add_argument("--incident", metavar="ID", help="only this incident's exchanges")
    audit.add_argument(
        "--output", type=Path, metavar="FILE", help="write to FILE (default: standard output)"
    )
    audit.set_defaults(run=deferred(LLM_COMMANDS, "run_audit"))


def parse_since(text: str, now: datetime) -> datetime:
    """``24h`` -> a day before ``now``; an RFC 3339 time with a zone as it is."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration (24h, 7d) or an RFC 3339 time, got {text[:64]!r}"
        ) from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"the time needs a zone, e.g. 2026-01-31T12:00:00Z; got {text[:64]!r}"
        )
    return parsed.astimezone(UTC)
