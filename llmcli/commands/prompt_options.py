"""What a command that reads one text does with it: the options declared once, gathered into `PromptArgs`.

A command decorated with `@prompt_options("chat", "system", ...)` declares `prompt_args: PromptArgs` and gets those
options (in the order of `OPTIONS`, after its own); `prompt_args.check()` refuses contradictions before any work,
and `prompt_args.text(argument)` reads the text from the argument, --file or stdin. The one-pass commands (lens,
next-token) take all of them: the raw text by default, --chat for the chat template.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmcli.commands import options as opt
from llmcli.commands.signature import option, with_options


@dataclass
class PromptArgs:
    chat: bool = False
    system: str | None = None
    raw: bool = False
    file: str | None = None
    json_out: bool = False
    server: str | None = None

    def check(self) -> None:
        """--chat with --raw, and --system without --chat, are usage errors."""
        from llmcli.errors import UsageError
        from llmcli.prompts import check_system

        if self.chat and self.raw:
            raise UsageError("--chat and --raw contradict each other")
        check_system(chat=self.chat, system=self.system)

    def text(self, argument: str | None) -> str:
        """The text: the argument, --file, '-' for stdin, or piped stdin before the argument."""
        from llmcli.prompts import single_prompt

        return single_prompt(argument, self.file)


OPTIONS: dict[str, tuple[Any, Any]] = {
    "chat": (opt.ChatTemplateOpt, False),
    "system": (opt.SystemOpt, None),
    "raw": (opt.RawDefaultOpt, False),
    "file": (opt.FileOpt, None),
    "json_out": (opt.JsonOpt, False),
    "server": (opt.ServerOpt, None),
}
ONE_PASS = tuple(OPTIONS)  # lens and next-token: every one


def prompt_options(*names: str) -> Callable:
    unknown = set(names) - set(OPTIONS)
    if unknown:
        raise ValueError(f"prompt_options: no option {sorted(unknown)}")
    params = [option(name, *OPTIONS[name]) for name in OPTIONS if name in names]
    return with_options(params, into="prompt_args", build=lambda values: PromptArgs(**values))
