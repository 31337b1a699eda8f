"""Keep the message catalogues in line with the code (ai_sidecar/i18n).

    python scripts/i18n.py check            # what is missing, untranslated or unused
    python scripts/i18n.py update [LANG]    # add new messages (empty), drop unused ones
    python scripts/i18n.py new LANG         # start a language: its catalogues, all empty

Exit status 1 when ``check`` finds a problem.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ai_sidecar.i18n import LOCALES_DIR  # noqa: E402
from ai_sidecar.i18n.catalogues import check, other_languages, update  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="list what keeps the catalogues from matching the code")
    update_command = commands.add_parser("update", help="add new messages, drop unused ones")
    update_command.add_argument("language", nargs="?", help="default: every language")
    new_command = commands.add_parser("new", help="start the catalogues of a new language")
    new_command.add_argument("language")
    args = parser.parse_args(argv)
    if args.command == "check":
        problems = [p for language in other_languages() for p in check(language)]
        for problem in problems:
            print(problem)
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1 if problems else 0
    if args.command == "new":
        (LOCALES_DIR / args.language / "LC_MESSAGES").mkdir(parents=True, exist_ok=True)
    languages = [args.language] if args.language else list(other_languages())
    for language in languages:
        for domain, added in update(language).items():
            print(f"{language}/{domain}: {added} new message(s) to translate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
