"""The one command-line rule of every fedhft command that has settings (simulate, server, edge)::

    fedhft COMMAND [--config FILE] [--help-config] [its options] key=value section.key=value ...

A *setting* is anything ``fedhft COMMAND --help-config`` lists. It is given as ``key=value`` on the
command line or as ``key: value`` in the YAML file of ``--config`` (the command line wins; a later
key=value wins over an earlier one). Options (``--name``) are only for what is not a setting:
``--config``, ``--help-config`` and a command's own arguments, such as the server's ``--broker``,
``--state`` and ``--credentials``. Any other ``--name`` is refused with the spelling to use::

    fedhft simulate: ... unknown option --clients: settings are given as key=value; did you mean clients=4?

Commands register with :func:`add_settings_parser` and turn the words they were given into
``load_config`` overrides with :func:`settings_overrides`. No torch, no paho: ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass

from fedhft.config import ConfigError, close_match, load_config, setting_types

_BOOL_WORDS = ("true", "false", "yes", "no", "on", "off", "1", "0")


@dataclass(frozen=True)
class CommandWords:
    """What a settings command was given besides its own options, in order, and what it knows."""

    prog: str  # "fedhft simulate": named in the hints
    words: tuple[str, ...]  # every word that is not one of the command's options (nor its value)
    options: tuple[str, ...]  # the command's own --options
    commands: tuple[str, ...] = ()  # its subcommands (server: fleet-init, status)


class SettingsParser(argparse.ArgumentParser):
    """A command parser whose own options are parsed by argparse while every other word is kept, in
    order, in ``args.settings`` (a CommandWords). argparse alone would answer an unknown ``--name``
    with its generic usage error before the command could say which key=value was meant."""

    run_word: str | None = None  # a subcommand word that means the command itself (server's "run")

    def parse_known_args(self, args=None, namespace=None):
        own, words = self._separate(list(sys.argv[1:] if args is None else args))
        namespace, extras = super().parse_known_args(own, namespace)
        options = tuple(s for s in self._option_string_actions if s.startswith("--"))
        namespace.settings = CommandWords(self.prog, tuple(words), options, tuple(self._subcommands()))
        return namespace, extras

    def _subcommands(self) -> list[str]:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return list(action.choices)
        return []

    def _separate(self, items: list[str]) -> tuple[list[str], list[str]]:
        """(this command's options with their values + a subcommand and its words, everything else)."""
        options, commands = self._option_string_actions, self._subcommands()
        own: list[str] = []
        words: list[str] = []
        i = 0
        while i < len(items):
            item = items[i]
            name = item.partition("=")[0]
            if item.startswith("-") and name in options:
                own.append(item)
                if options[name].nargs != 0 and "=" not in item and i + 1 < len(items):
                    i += 1
                    own.append(items[i])
            elif not words and item == self.run_word:
                pass
            elif not words and item in commands:
                own.extend(items[i:])
                break
            else:
                words.append(item)
            i += 1
        return own, words


def add_settings_parser(
    subparsers: argparse._SubParsersAction, name: str, *, config_help: str = "", **kwargs
) -> SettingsParser:
    """``subparsers.add_parser(name, **kwargs)`` for a command with settings, with --config and
    --help-config; the command reads ``args.config``, ``args.help_config`` and ``args.settings``."""
    saved = subparsers._parser_class
    subparsers._parser_class = SettingsParser
    try:
        parser = subparsers.add_parser(name, allow_abbrev=False, **kwargs)
    finally:
        subparsers._parser_class = saved
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=config_help or "YAML file of settings (key: value); key=value words override it",
    )
    parser.add_argument(
        "--help-config", action="store_true", help="list every setting with its type, default and help, then exit"
    )
    # Shown in --help only: SettingsParser hands these words over in args.settings.
    parser.add_argument(
        "settings",
        nargs="*",
        metavar="key=value",
        help="settings, e.g. key=value section.key=value (every one: --help-config); a setting is never spelled --key",
    )
    return parser


def settings_overrides(given: CommandWords, cls: type, config: str | None = None) -> list[str]:
    """The key=value words of ``given`` for ``load_config(cls, config, ...)``. A word that is not one
    (an unknown --option, a bare word) raises ConfigError naming the key=value to use, together with
    every problem of the settings themselves, so that one run reports everything."""
    overrides, problems = _sort_words(given, setting_types(cls))
    if not problems:
        return overrides
    try:
        load_config(cls, config, overrides)
    except ConfigError as exc:
        problems += exc.errors
    raise ConfigError(problems, "the command line" if config is None else f"{config} + the command line")


def _sort_words(given: CommandWords, keys: dict[str, str]) -> tuple[list[str], list[str]]:
    overrides: list[str] = []
    problems: list[str] = []
    words = list(given.words)
    i = 0
    while i < len(words):
        word, after = words[i], (words[i + 1] if i + 1 < len(words) else None)
        if word == "--":
            used, problem = False, None
        elif word.startswith("-") and len(word) > 1:
            used, problem = _unknown_option(word, after, keys, given)
        elif "=" not in word or word.startswith("="):
            used, problem = _bare_word(word, after, keys, given)
        else:
            used, problem = False, None
            overrides.append(word)
        if problem:
            problems.append(problem)
        i += 2 if used else 1
    return overrides, problems


def _settings(keys: dict[str, str]) -> list[str]:
    return [k for k, kind in keys.items() if kind != "section"]


def _setting(word: str, keys: dict[str, str]) -> str | None:
    """The setting ``word`` names, exactly or as a probable typo (dashes read as underscores)."""
    key = word.replace("-", "_")
    return key if key in _settings(keys) else close_match(key, _settings(keys))


def _did_you_mean(name: str, key: str, value: str | None) -> str:
    spelled = f"{key}=<value>" if value is None else f"{key}={shlex.quote(value)}"
    return f"unknown option {name}: settings are given as key=value; did you mean {spelled}?"


def _unknown_option(word: str, after: str | None, keys: dict[str, str], given: CommandWords) -> tuple[bool, str]:
    """(whether the next word was this option's value, the problem with its fix)."""
    name, eq, value = word.partition("=")
    stripped = name.lstrip("-").replace("-", "_")
    # One pool, so that a typo goes to whichever of a setting or an option it is closest to.
    pool = {o.lstrip("-").replace("-", "_"): o for o in given.options}
    pool.update({k: k for k in _settings(keys)})
    target = stripped if stripped in _settings(keys) else close_match(stripped, list(pool))
    value_next = not eq and after is not None and "=" not in after and not after.startswith("-")
    if target is not None and pool[target].startswith("-"):
        return value_next, f"unknown option {name}: did you mean {pool[target]}?"
    if target is not None:
        takes = keys[target] != "bool" or (after or "").lower() in _BOOL_WORDS
        if not eq and after is not None and not after.startswith("--") and takes:
            return True, _did_you_mean(name, target, after)
        return False, _did_you_mean(name, target, value if eq else "true" if keys[target] == "bool" else None)
    # `--set key=value` and the like: the option's value is itself a setting
    setting = value if eq else (after or "")
    inner_key, inner_eq, inner_value = setting.partition("=")
    inner = _setting(inner_key, keys) if inner_eq and not setting.startswith("-") else None
    if inner is not None:
        return not eq, _did_you_mean(name, inner, inner_value)
    return value_next, (
        f"unknown option {name}: {given.prog} takes the options {', '.join(given.options)}; "
        f"its settings are key=value (list them with {given.prog} --help-config)"
    )


def _bare_word(word: str, after: str | None, keys: dict[str, str], given: CommandWords) -> tuple[bool, str]:
    exact = word.replace("-", "_") in _settings(keys)
    command = None if exact else close_match(word, given.commands)
    key = None if command else _setting(word, keys) if word else None
    if key is not None and after is not None and "=" not in after and not after.startswith("--"):
        return True, f"{word!r} is not key=value: did you mean {key}={shlex.quote(after)}?"
    if key is not None:
        return False, f"{word!r} is not key=value: give the setting a value, {key}=<value>"
    if command is not None:
        return False, f"{word!r} is not key=value nor a command: did you mean {given.prog} {command}?"
    return False, (
        f"{word!r} is not key=value: settings are given as key=value (list them with {given.prog} --help-config)"
    )


__all__ = ["CommandWords", "SettingsParser", "add_settings_parser", "settings_overrides"]
