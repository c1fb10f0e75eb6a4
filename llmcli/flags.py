"""The decoding flags, declared once: option names, type, bounds, help and the `generate()` keyword.

generate's and chat's options, next-token's filters, the range checks, the forwarding to `generate()`,
`--show-config` and chat's `/set` are all derived from `FLAGS`. Adding a decoding flag is one `Flag` entry
(plus its test); nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from llmcli.errors import UsageError


class EarlyStopping(StrEnum):
    true = "true"
    false = "false"
    never = "never"


EARLY_STOPPING_VALUES = {"true": True, "false": False, "never": "never"}


@dataclass(frozen=True)
class Flag:
    key: str  # the name in DecodingFlags, chat's /set and (unless `generate_key` says otherwise) generate()
    names: tuple[str, ...]  # command-line spellings; the first one names the flag in messages
    type: Any  # int, float, bool, list (repeatable str) or a StrEnum
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    sampling: bool = False  # a sampling filter: turns sampling on, contradicts --greedy, shown by next-token
    in_chat: bool = True  # settable in chat (options and /set); beams and several answers are not
    generate_key: str | None = None

    @property
    def option(self) -> str:
        return self.names[0].split("/")[0]

    @property
    def forwarded_as(self) -> str:
        return self.generate_key or self.key

    def check(self, value: Any) -> None:
        """Range check with the flag's own name in the message."""
        if value is None or self.type not in (int, float):
            return
        if value != value:  # NaN
            raise UsageError(f"{self.option} must be a number, got nan")
        if self.low is None:
            return
        too_low = value <= self.low if self.low_open else value < self.low
        if not too_low and (self.high is None or value <= self.high):
            return
        if self.high is None:
            bound = f"> {self.low}" if self.low_open else f">= {self.low}"
        else:
            bound = f"in ({self.low}, {self.high}]" if self.low_open else f"in [{self.low}, {self.high}]"
        raise UsageError(f"{self.option} must be {bound}, got {value}")

    def parse(self, text: str) -> Any:
        """A value typed as text (chat's /set)."""
        text = text.strip()
        try:
            if self.type is bool:
                return {"true": True, "false": False}[text.lower()]
            if self.type in (int, float) or isinstance(self.type, type) and issubclass(self.type, StrEnum):
                return self.type(text)
        except (KeyError, ValueError):
            kind = "true or false" if self.type is bool else f"a {getattr(self.type, '__name__', 'value')}"
            raise UsageError(f"/set {self.key}: {text!r} is not {kind}") from None
        return text


FLAGS: tuple[Flag, ...] = (
    Flag("max_new_tokens", ("--max-new-tokens", "-n"), int, "Most tokens to generate.", low=1),
    Flag("min_new_tokens", ("--min-new-tokens",), int, "Fewest tokens before the end-of-text token counts.", low=0),
    Flag(
        "temperature",
        ("--temperature", "-t"),
        float,
        "Softmax temperature, P ∝ exp(z / T); turns sampling on (0 means greedy).",
        low=0,
        sampling=True,
    ),
    Flag("top_k", ("--top-k",), int, "Sample among the k most likely tokens.", low=0, sampling=True),
    Flag(
        "top_p",
        ("--top-p",),
        float,
        "Nucleus sampling: the smallest set whose mass reaches p, (0, 1].",
        low=0,
        high=1,
        low_open=True,
        sampling=True,
    ),
    Flag("min_p", ("--min-p",), float, "Keep tokens with p ≥ min_p × p(top), [0, 1].", low=0, high=1, sampling=True),
    Flag(
        "typical_p",
        ("--typical-p",),
        float,
        "Locally typical sampling mass, (0, 1].",
        low=0,
        high=1,
        low_open=True,
        sampling=True,
    ),
    Flag("do_sample", ("--do-sample/--greedy",), bool, "Force sampling or greedy decoding (default: the model's)."),
    Flag("num_beams", ("--num-beams",), int, "Beam search with this many beams.", low=1, in_chat=False),
    Flag("length_penalty", ("--length-penalty",), float, "Beam search: exponent on the length.", in_chat=False),
    Flag("early_stopping", ("--early-stopping",), EarlyStopping, "Beam search: true, false or never.", in_chat=False),
    Flag(
        "repetition_penalty",
        ("--repetition-penalty",),
        float,
        "Divide the logits of tokens already seen (> 0).",
        low=0,
        low_open=True,
    ),
    Flag(
        "frequency_penalty",
        ("--frequency-penalty",),
        float,
        "Subtract this × how often a token already occurs in the output from its logit (OpenAI's), [-2, 2].",
        low=-2,
        high=2,
    ),
    Flag(
        "presence_penalty",
        ("--presence-penalty",),
        float,
        "Subtract this from the logit of every token already in the output (OpenAI's), [-2, 2].",
        low=-2,
        high=2,
    ),
    Flag(
        "logit_bias",
        ("--logit-bias",),
        list,
        "ID=BIAS: add BIAS in [-100, 100] to that token id's logit (repeatable); -100 bans it, 100 all but forces it.",
        generate_key="sequence_bias",
    ),
    Flag("no_repeat_ngram_size", ("--no-repeat-ngram-size",), int, "Never repeat an n-gram of this size.", low=0),
    Flag("num_return_sequences", ("--num-return-sequences",), int, "Answers per prompt.", low=1, in_chat=False),
    Flag(
        "prompt_lookup_num_tokens",
        ("--prompt-lookup",),
        int,
        "Prompt-lookup decoding: propose up to N tokens copied from the prompt where its n-grams repeat, and "
        "keep what the model agrees with (greedy output unchanged; one prompt at a time).",
        low=1,
    ),
    Flag(
        "stop", ("--stop",), list, "Stop string (repeatable); the output ends before it.", generate_key="stop_strings"
    ),
)
BY_KEY = {f.key: f for f in FLAGS}
SAMPLING_KEYS = tuple(f.key for f in FLAGS if f.sampling)
CHAT_KEYS = tuple(f.key for f in FLAGS if f.in_chat)
