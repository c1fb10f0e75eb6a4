"""The one output layer: Rich on a TTY, plain text when piped, JSON on request.

Commands describe what to show as a list of `Section`s made of a few block types; this module decides
how they look. Data goes to stdout, everything else (progress, stats, warnings) to stderr. Every string
that reaches Rich goes in as `Text`, so model-supplied strings like `[/INST]` print literally.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from llmcli.errors import EXIT_BROKEN_PIPE, LlmcliError, write_stderr


class StdoutClosed(LlmcliError):
    """The reader of stdout went away (`| head`): stop quietly."""

    exit_code = EXIT_BROKEN_PIPE
    quiet = True

    def __init__(self) -> None:
        super().__init__("stdout closed")


@dataclass
class KV:
    """Rows of key, value and an optional explanation."""

    rows: list[tuple[str, str, str]]


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)  # column indexes to right-align
    styles: list[list[str]] | None = None  # a Rich style per cell (colour on a terminal; plain text ignores it)


@dataclass
class Node:
    label: str
    detail: str = ""
    children: list[Node] = field(default_factory=list)


@dataclass
class Para:
    text: str
    style: str = ""  # "", "warn", "ok", "dim", "head" (a sub-heading)


@dataclass
class Section:
    title: str
    blocks: list[Any]


def choose_mode(json_requested: bool, stream: Any = None) -> str:
    if json_requested:
        return "json"
    forced = os.environ.get("LLMCLI_OUTPUT", "").lower()
    if forced in ("rich", "plain"):
        return forced
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return "plain"
    try:
        return "rich" if stream.isatty() else "plain"
    except (AttributeError, ValueError):
        return "plain"


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def silence_stdout() -> None:
    """After EPIPE, point fd 1 at /dev/null so the interpreter's final flush cannot complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


@contextmanager
def _stdout_errors() -> Iterator[None]:
    """A reader that went away ends quietly (exit 141); any other write failure is a one-line error."""
    try:
        yield
    except BrokenPipeError:
        silence_stdout()
        raise StdoutClosed() from None
    except OSError as exc:
        raise LlmcliError(f"cannot write output: {exc.strerror or exc}", path="stdout") from None


def write_stdout(text: str, flush: bool = False) -> None:
    with _stdout_errors():
        sys.stdout.write(text)
        if flush:
            sys.stdout.flush()


def flush_stdout() -> None:
    with _stdout_errors():
        sys.stdout.flush()


def emit_json(obj: Any) -> None:
    write_stdout(json.dumps(obj, ensure_ascii=False, allow_nan=False, default=str) + "\n", flush=True)


def warn(message: str) -> None:
    """A one-line notice on stderr (never stdout)."""
    write_stderr(f"llmcli: {message}")


def stderr_text(text: str = "") -> None:
    """Text for the person at the terminal (chat's help, a line end after Ctrl-C): stderr, never stdout."""
    write_stderr(text)


@contextmanager
def spinner(message: str, *, enabled: bool) -> Iterator[None]:
    """A spinner on stderr while something slow runs (a terminal only)."""
    if not enabled:
        yield
        return
    from rich.console import Console

    with Console(file=sys.stderr).status(message, spinner="dots"):
        yield


@contextmanager
def progress(total: int, label: str, *, enabled: bool) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr for `total` steps (a terminal only); yields the function that advances it."""
    if not enabled or total <= 1:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


def confidence_writer():
    """For streaming on a terminal: writes each piece coloured by the probability of its token."""
    from rich.console import Console
    from rich.text import Text

    console = Console(file=sys.stdout, highlight=False, soft_wrap=True, force_terminal=True)

    def write(text: str, prob: float) -> None:
        style = "green" if prob >= 0.9 else "default" if prob >= 0.5 else "yellow" if prob >= 0.2 else "bold red"
        with _stdout_errors():
            console.print(Text(text, style=style), end="")
            sys.stdout.flush()

    return write


# ---------------------------------------------------------------- plain text


def _pad(cells: list[str], widths: list[int], numeric: set[int]) -> str:
    parts = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
    return "  ".join(parts).rstrip()


def _plain_block(block: Any) -> list[str]:
    if isinstance(block, KV):
        width = max((len(k) for k, _, _ in block.rows), default=0)
        vwidth = min(max((len(v) for _, v, _ in block.rows), default=0), 40)
        lines = []
        for key, value, note in block.rows:
            line = f"  {key.ljust(width)}  {value.ljust(vwidth) if note else value}"
            lines.append(f"{line}  # {note}" if note else line)
        return lines
    if isinstance(block, Table):
        rows = [block.columns, *block.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(block.columns))]
        out = ["  " + _pad(block.columns, widths, block.numeric)]
        out += ["  " + _pad(r, widths, block.numeric) for r in block.rows]
        return out
    if isinstance(block, Node):
        lines: list[str] = []

        def walk(node: Node, depth: int) -> None:
            detail = f"  {node.detail}" if node.detail else ""
            lines.append("  " + "  " * depth + node.label + detail)
            for child in node.children:
                walk(child, depth + 1)

        walk(block, 0)
        return lines
    if isinstance(block, Para):
        if block.style == "head":
            return [f"{block.text}:"]
        prefix = {"warn": "! "}.get(block.style, "")
        return [f"  {prefix}{block.text}"]
    raise TypeError(block)


def render_plain(sections: list[Section]) -> str:
    out: list[str] = []
    for section in sections:
        if out:
            out.append("")
        out.append(f"== {section.title} ==")
        for block in section.blocks:
            out.extend(_plain_block(block))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- rich


def _rich_block(block: Any) -> Any:
    from rich.table import Table as RTable
    from rich.text import Text
    from rich.tree import Tree

    if isinstance(block, KV):
        table = RTable.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        table.add_column(style="dim")
        for key, value, note in block.rows:
            table.add_row(Text(key), Text(value), Text(note))
        return table
    if isinstance(block, Table):
        table = RTable(show_edge=False, header_style="bold")
        for i, col in enumerate(block.columns):
            table.add_column(Text(col), justify="right" if i in block.numeric else "left")
        styles = block.styles or [[""] * len(row) for row in block.rows]
        for row, style in zip(block.rows, styles, strict=True):
            table.add_row(*(Text(c, style=s) for c, s in zip(row, style, strict=True)))
        return table
    if isinstance(block, Node):

        def label(node: Node) -> Text:
            text = Text(node.label, style="bold")
            if node.detail:
                text.append("  " + node.detail, style="dim")
            return text

        tree = Tree(label(block))

        def walk(node: Node, parent: Any) -> None:
            for child in node.children:
                walk(child, parent.add(label(child)))

        walk(block, tree)
        return tree
    if isinstance(block, Para):
        style = {"warn": "bold yellow", "ok": "green", "dim": "dim", "head": "bold underline"}.get(block.style, "")
        return Text(block.text, style=style)
    raise TypeError(block)


def render_rich(sections: list[Section], file: Any = None, width: int | None = None) -> None:
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.text import Text

    console = Console(file=file or sys.stdout, width=width, highlight=False, soft_wrap=False)
    for section in sections:
        body = Group(*(_rich_block(b) for b in section.blocks))
        console.print(Panel(body, title=Text(section.title, style="bold"), title_align="left"))


def show(sections: list[Section], mode: str) -> None:
    if mode == "rich":
        with _stdout_errors():
            render_rich(sections)
            sys.stdout.flush()
    else:
        write_stdout(render_plain(sections), flush=True)


def print_stats(stats: Any) -> None:
    """Generation figures as one line on stderr (--stats, -v, chat's /stats)."""
    from llmcli.units import human_bytes

    def fmt(value, unit=""):
        return "n/a" if value is None else f"{value}{unit}"

    lines = [
        f"load {fmt(stats.load_seconds, ' s')}",
        f"prompt tokens {stats.prompt_tokens}",
        f"time to first token {fmt(stats.time_to_first_token, ' s')}",
        f"prefill {fmt(stats.prefill_tokens_per_second, ' tok/s')}",
        f"decode {fmt(stats.decode_tokens_per_second, ' tok/s')}",
        f"generated tokens {stats.generated_tokens}",
        f"peak memory {human_bytes(stats.peak_memory_bytes) if stats.peak_memory_bytes else 'n/a'} "
        f"({stats.peak_memory_kind})",
    ]
    if getattr(stats, "attn_implementation", None):
        lines.append(f"attention {stats.attn_implementation}")
    write_stderr("llmcli stats: " + "; ".join(lines))


def present(report: Any, *, json: bool = False) -> None:
    """A `reports.Report`: its data as one JSON object, or its sections (Rich on a terminal, else plain)."""
    mode = choose_mode(json)
    if mode == "json":
        emit_json(report.data)
    else:
        show(report.sections, mode)
