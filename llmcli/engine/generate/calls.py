"""A generate() call prepared: the prompt encoded (through the chat template or raw), checked against the
context, and generate()'s arguments completed (length, padding, logits for --logprobs, end-of-text ids)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmcli.engine.generate.collect import eos_set
from llmcli.errors import LlmcliError, UsageError
from llmcli.plan import GenerationPlan
from llmcli.prompts import chat_messages

# Used only when neither the user nor the model's generation_config.json bounds the length.
FALLBACK_MAX_NEW_TOKENS = 256


def encode(tokenizer: Any, text: str, *, system: str | None = None, raw: bool = False) -> list[int]:
    """The prompt's token ids: through the chat template unless `raw` (or the model has none)."""
    if not raw and getattr(tokenizer, "chat_template", None):
        messages = chat_messages(system, [{"role": "user", "content": text}])
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(encoded["input_ids"])
    if system and not raw:
        raise UsageError("--system needs a chat template, and this model has none (drop --system or use --raw)")
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def one_pass_ids(tokenizer: Any, text: str, *, chat: bool, system: str | None) -> list[int]:
    """The ids of one-pass commands (next-token, lens): the raw text, or with --chat the chat template, which
    the model must have."""
    from llmcli.prompts import check_system

    check_system(chat=chat, system=system)
    if chat and not getattr(tokenizer, "chat_template", None):
        raise UsageError("--chat: this model's tokenizer has no chat template")
    return encode(tokenizer, text, system=system, raw=not chat)


def model_context(config: dict[str, Any]) -> int | None:
    from llmcli.modelfs.config import geometry

    return geometry(config).context


@dataclass
class Call:
    """One generate() call, ready to run: inputs padded on the left, keyword arguments completed."""

    loaded: Any
    prompts: list[str]
    encoded: list[list[int]]
    kwargs: dict[str, Any]
    seed: int | None
    logprobs: int | None
    pad_id: int
    width: int
    eos: set[int] = field(default_factory=set)
    constraint: Any = None  # engine.generate.constraints.Compiled
    assistant: Any = None  # generate()'s assistant_model
    plain_step: bool = False  # plan.GenerationPlan.plain_step

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def stops(self) -> list[str]:
        return list(self.kwargs.get("stop_strings") or [])

    @property
    def on_gpu(self) -> bool:
        return self.loaded.device.startswith("cuda")

    @property
    def beams(self) -> int:
        return self.kwargs.get("num_beams", self.loaded.model.generation_config.num_beams or 1)

    @property
    def single(self) -> bool:
        return len(self.prompts) == 1 and self.kwargs.get("num_return_sequences", 1) == 1 and self.beams == 1


def check_biased_ids(model: Any, kwargs: dict[str, Any]) -> None:
    """--logit-bias names token ids of this model's vocabulary (checked here, not mid-batch by transformers)."""
    from llmcli.engine.load.loader import vocab_size

    vocab = vocab_size(model)
    for [[token], _bias] in kwargs.get("sequence_bias") or []:
        if vocab is not None and token >= vocab:
            raise UsageError(
                f"logit_bias (--logit-bias): token id {token} is outside this model's vocabulary of {vocab}"
            )


def prepare(loaded: Any, prompts: list[str], encoded: list[list[int]], plan: GenerationPlan) -> Call:
    """Checks the prompts against the context and completes generate()'s arguments (length, padding)."""
    context = model_context(loaded.config)
    for ids in encoded:
        if not ids:
            raise UsageError("the prompt encodes to no tokens")
        if context and len(ids) >= context:
            raise LlmcliError(
                f"the prompt is {len(ids):,} tokens, but the model's context is {context:,} tokens",
                hint="shorten the prompt",
            )
    kwargs = dict(plan.kwargs)
    check_biased_ids(loaded.model, kwargs)
    defaults = loaded.model.generation_config
    unbounded = getattr(defaults, "max_new_tokens", None) is None and getattr(defaults, "max_length", 20) in (None, 20)
    if "max_new_tokens" not in kwargs and unbounded:
        kwargs["max_new_tokens"] = FALLBACK_MAX_NEW_TOKENS
    if context and kwargs.get("max_new_tokens"):
        kwargs["max_new_tokens"] = min(kwargs["max_new_tokens"], context - max(len(i) for i in encoded))
    tokenizer = loaded.tokenizer
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    if "pad_token_id" not in kwargs and getattr(defaults, "pad_token_id", None) is None:
        kwargs["pad_token_id"] = pad_id
    call = Call(loaded, prompts, encoded, kwargs, plan.seed, plan.logprobs, pad_id, max(len(i) for i in encoded))
    if plan.logprobs is not None:
        if call.beams > 1:
            raise UsageError("--logprobs works with greedy decoding and sampling, not with beam search")
        kwargs["output_logits"] = True
        kwargs["return_dict_in_generate"] = True
    call.eos = eos_set(loaded.model, kwargs)
    call.constraint = plan.constraint
    call.assistant = plan.assistant
    call.plain_step = plan.plain_step
    return call
