"""Write docs/cli.md from the Typer app (noisefix.cli.app): every command's help, usage, arguments and options.

    .venv/bin/python scripts/gen_cli_docs.py          # regenerate docs/cli.md
    .venv/bin/python scripts/gen_cli_docs.py --check  # exit 1 when docs/cli.md is stale

Deterministic: built from the click command tree (help records, defaults), not from a terminal rendering, so
neither the terminal width nor colour settings change the output. tests/test_cli_docs.py fails when the file
is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "cli.md"
REGENERATE = ".venv/bin/python scripts/gen_cli_docs.py"


def walk(cmd, ctx, path: tuple[str, ...]):
    """(path, command, context) for `cmd` and every subcommand, depth first, in registration order."""
    yield path, cmd, ctx
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            yield from walk(sub, sub.context_class(sub, info_name=name, parent=ctx), path + (name,))


def usage(cmd, ctx, path: tuple[str, ...]) -> str:
    parts = list(path) + ["[OPTIONS]"]
    for p in cmd.get_params(ctx):
        if p.param_type_name == "argument":
            name = p.name.upper() + ("..." if p.nargs != 1 else "")
            parts.append(name if p.required else f"[{name}]")
    if hasattr(cmd, "list_commands"):
        parts.append("COMMAND [ARGS]...")
    return " ".join(parts)


def params_md(cmd, ctx, kind: str) -> list[str]:
    """Markdown bullets for the command's arguments or options (`--help` left out)."""
    lines = []
    for p in cmd.get_params(ctx):
        if p.param_type_name != kind or p.name == "help" or getattr(p, "hidden", False):
            continue
        record = p.get_help_record(ctx)
        if record is None:
            continue
        names, text = record
        if kind == "argument":
            names = p.name.upper()
        text = md(" ".join(text.split()))
        lines.append(f"- `{names}`" + (f": {text}" if text else ""))
    return lines


def section(cmd, ctx, path: tuple[str, ...]) -> str:
    out = [f"## {' '.join(path)}", ""]
    if cmd.help:
        out += [md(cmd.help.strip()), ""]
    out += ["```", usage(cmd, ctx, path), "```", ""]
    for kind, title in (("argument", "Arguments"), ("option", "Options")):
        items = params_md(cmd, ctx, kind)
        if items:
            out += [f"**{title}**", ""] + items + [""]
    if hasattr(cmd, "list_commands"):
        subs = [(n, cmd.get_command(ctx, n)) for n in cmd.list_commands(ctx)]
        out += ["**Commands**", ""] + [f"- `{n}`: {_first_line(s)}" for n, s in subs if not s.hidden] + [""]
    return "\n".join(out)


def _first_line(cmd) -> str:
    return md(" ".join((cmd.help or "").strip().split("\n\n")[0].split()))


def md(text: str) -> str:
    """Help text as Markdown: `code` spans kept, elsewhere <, > and * escaped (`DATA/<class>` is not a tag)."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("*", r"\*")
    return "`".join(parts)


def _anchor(path: tuple[str, ...]) -> str:
    return "-".join(path)


def render() -> str:
    """The whole of docs/cli.md."""
    from typer.main import get_command

    from noisefix.cli import app

    root = get_command(app)
    ctx = root.context_class(root, info_name="noisefix")
    entries = list(walk(root, ctx, ("noisefix",)))
    toc = ["| command | what it does |", "|---|---|"]
    toc += [f"| [`{' '.join(p)}`](#{_anchor(p)}) | {_first_line(c).replace('|', chr(92) + '|')} |" for p, c, _ in entries[1:]
            if not hasattr(c, "list_commands")]
    head = ["# noisefix command line", "",
            f"Generated from the Typer app by `{REGENERATE}`; do not edit by hand",
            "(a test fails when this file is stale). `noisefix COMMAND --help` prints the same text.", ""]
    body = [section(c, x, p) for p, c, x in entries]
    return "\n".join(head + toc + [""] + body).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOCS.is_file() or DOCS.read_text(encoding="utf-8") != text:
            print(f"{DOCS} is stale; regenerate it with `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    from noisefix.io.atomic import write_text

    write_text(DOCS, text)
    print(f"wrote {DOCS}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
