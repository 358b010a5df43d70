"""docs/cli.md is generated from the Typer app by scripts/gen_cli_docs.py and must match it."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_docs_are_current():
    gen = _generator()
    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == gen.render(), (
        f"docs/cli.md is stale; regenerate it with `{gen.REGENERATE}`")


def test_cli_docs_cover_every_command_and_option(monkeypatch):
    monkeypatch.setenv("COLUMNS", "37")  # the terminal does not change the text
    text = _generator().render()
    for heading in ("## noisefix train", "## noisefix relabel", "## noisefix clean", "## noisefix data export"):
        assert heading in text
    assert "- `--ensemble <int>`" in text and "`--help`" not in text
    assert "&lt;class&gt;" in text  # DATA/<class> is escaped, not swallowed as an HTML tag
