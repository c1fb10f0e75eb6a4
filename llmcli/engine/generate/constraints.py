"""Structured output through xgrammar (the grammar engine vLLM and SGLang use): a JSON schema, any JSON
object, a regular expression or an EBNF/GBNF grammar constrains every sampled token.

xgrammar parses the grammar (errors are usage errors naming the problem), compiles it against the model's
tokenizer, and masks the logits at each step through its transformers logits processor. After generate()
a fresh matcher replays each output: the structure is complete only when the matcher accepted every token
and terminated on the end-of-text token.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from llmcli.errors import LlmcliError, UsageError, squash
from llmcli.plan import CONSTRAINT_FLAGS, Constraint


@dataclass
class Compiled:
    constraint: Constraint
    grammar: Any  # xgrammar.CompiledGrammar
    compile_seconds: float

    def processor(self) -> Any:
        """A fresh logits processor: xgrammar's holds per-call matcher state."""
        from xgrammar.contrib.hf import LogitsProcessor

        return LogitsProcessor(self.grammar)

    def complete(self, token_ids: list[int]) -> bool:
        import xgrammar as xgr

        matcher = xgr.GrammarMatcher(self.grammar)
        return all(matcher.accept_token(t) for t in token_ids) and matcher.is_terminated()

    def valid(self, text: str, token_ids: list[int]) -> bool:
        """Complete, and for JSON a document that a strict parser reads and the schema accepts."""
        return self.complete(token_ids) and self.constraint.accepts_document(text)


def parse(constraint: Constraint) -> Any:
    """xgrammar's Grammar for the constraint; a grammar it cannot read is a usage error."""
    try:
        import xgrammar as xgr
    except ImportError:
        raise LlmcliError(
            f"{CONSTRAINT_FLAGS[constraint.kind]} needs the xgrammar package",
            hint="run scripts/setup.sh, or pip install 'llmcli[structured]'",
        ) from None

    try:
        if constraint.kind == "json_schema":
            return xgr.Grammar.from_json_schema(constraint.source, any_whitespace=False)
        if constraint.kind == "json_object":
            return xgr.Grammar.from_json_schema('{"type": "object"}', any_whitespace=False)
        if constraint.kind == "regex":
            return xgr.Grammar.from_regex(constraint.source)
        return xgr.Grammar.from_ebnf(constraint.source)
    except (RuntimeError, ValueError) as exc:
        # xgrammar prefixes a timestamp and its C++ source position: "[22:33:04] /project/cpp/x.cc:83: ..."
        detail = re.sub(r"^(\[[\d:]+\]\s*)?\S+\.cc:\d+:\s*", "", squash(exc))
        raise UsageError(f"{CONSTRAINT_FLAGS[constraint.kind]}: {detail}") from None


def compile_for(loaded: Any, constraint: Constraint, grammar: Any, kwargs: dict[str, Any]) -> Compiled:
    """The grammar compiled against this model's tokenizer (its token strings and full vocabulary size); the
    end-of-text tokens that close it are those generate() stops on with these `kwargs`."""
    import xgrammar as xgr

    from llmcli.engine.generate.collect import eos_set

    stop_token_ids = eos_set(loaded.model, kwargs)
    started = time.perf_counter()
    vocab = getattr(loaded.model.config, "vocab_size", None) or len(loaded.tokenizer)
    info = xgr.TokenizerInfo.from_huggingface(
        loaded.tokenizer, vocab_size=max(vocab, len(loaded.tokenizer)), stop_token_ids=sorted(stop_token_ids)
    )
    compiled = xgr.GrammarCompiler(info).compile_grammar(grammar)
    return Compiled(constraint, compiled, time.perf_counter() - started)
