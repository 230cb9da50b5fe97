"""identity --help: every command group, every subcommand and option explained, and where
the settings come from."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from identity.cli.main import _parser
from tests.conftest import run_main as _run

GROUPS = ("serve", "migrate", "clients", "users", "keys", "audit", "mail", "providers")


def _help(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        _run(capsys, *words, "--help")
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    """(words, parser, its help line) of every command and group under ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                yield (*path, name), child, helps.get(name)
                yield from _commands(child, (*path, name))


def test_top_level_help_lists_every_command_group(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys)
    listed = [line.split()[0] for line in text.splitlines() if line.startswith("    ")]
    for group in GROUPS:
        assert group in listed, group


def test_top_level_help_says_where_settings_come_from(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help(capsys)
    assert "IDENTITY_* environment variable" in text
    assert '"Settings" table' in text and "IDENTITY_DATABASE_URL" in text


def test_every_command_and_option_has_help_text() -> None:
    commands = list(_commands(_parser()))
    assert len(commands) > 20
    for words, parser, line in commands:
        assert line, f"identity {' '.join(words)} has no help line"
        for action in parser._actions:
            if action.option_strings and action.help != argparse.SUPPRESS:
                assert action.help, f"identity {' '.join(words)} {action.option_strings[0]}"
            elif not action.option_strings and not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"identity {' '.join(words)} {action.dest}"


def test_options_that_repeat_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    commands = {words: parser for words, parser, _ in _commands(_parser())}
    create = commands[("clients", "create")]
    repeating = [a for a in create._actions if isinstance(a, argparse._AppendAction)]
    assert {a.option_strings[0] for a in repeating} >= {"--redirect-uri", "--grant-type"}
    for action in repeating:
        assert "repeat" in (action.help or ""), action.option_strings[0]
    assert "repeat" in _help(capsys, "clients", "create")
