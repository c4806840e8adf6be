"""Keep docs/cli.md's usage blocks equal to `ponder COMMAND --help`.

Each command has a section `## \\`ponder NAME\\``: hand-written prose, then one fenced block that this script
rewrites from the parser (120 columns). A command without a section gets one, with its one-line help as the prose.
`python docs/cli_help.py` rewrites the file; tests/test_docs.py fails when it is stale.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

PAGE = Path(__file__).with_name("cli.md")
FENCE = "```"


def help_text(name: str) -> str:
    """`ponder NAME --help` at a fixed width, so the page does not depend on the terminal that made it."""
    from ponder.cli import build_parser

    os.environ["COLUMNS"] = "120"
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    return commands.choices[name].format_help().rstrip()


def render(page: str) -> str:
    """The page with every command's usage block replaced by the parser's current text."""
    from ponder.cli import COMMANDS

    sections = re.split(r"(?m)^(?=## `ponder )", page)
    head, by_name = sections[0], {}
    for section in sections[1:]:
        by_name[re.match(r"## `ponder (\S+)`", section).group(1)] = section
    out = [head]
    for name, command in COMMANDS.items():
        section = by_name.get(name, f"## `ponder {name}`\n\n{command.help[0].upper()}{command.help[1:]}.\n\n")
        prose = section.split(FENCE)[0].rstrip() + "\n\n"
        out.append(f"{prose}{FENCE}\n{help_text(name)}\n{FENCE}\n\n")
    return "".join(out).rstrip() + "\n"


if __name__ == "__main__":
    text = render(PAGE.read_text())
    if "--check" in sys.argv:
        sys.exit(text != PAGE.read_text())
    PAGE.write_text(text)
