"""The tokenizer in brief, from its JSON files alone (no torch, no tokenizer object built)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmcli.modelfs.files import read_json_object

SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def tokenizer_summary(model_dir: Path) -> dict[str, Any] | None:
    cfg_path = model_dir / "tokenizer_config.json"
    tok_path = model_dir / "tokenizer.json"
    if not cfg_path.is_file() and not tok_path.is_file():
        return None
    cfg = read_json_object(cfg_path, what="tokenizer config") if cfg_path.is_file() else {}
    summary: dict[str, Any] = {
        "class": cfg.get("tokenizer_class") if isinstance(cfg.get("tokenizer_class"), str) else None,
        "files": sorted(
            p.name
            for p in model_dir.iterdir()
            if p.name.startswith(("tokenizer", "vocab", "merges", "special_tokens", "chat_template"))
        ),
    }
    specials = {k: _token_text(cfg.get(k)) for k in SPECIAL_KEYS if _token_text(cfg.get(k)) is not None}
    added_special: list[str] = []
    vocab_size = None
    model_type = None
    if tok_path.is_file():
        tok = read_json_object(tok_path, max_bytes=200 * 1024 * 1024, what="tokenizer.json")
        model = tok.get("model")
        if isinstance(model, dict):
            model_type = model.get("type") if isinstance(model.get("type"), str) else None
            vocab = model.get("vocab")
            if isinstance(vocab, (dict, list)):
                vocab_size = len(vocab)
        added = tok.get("added_tokens")
        if isinstance(added, list):
            extra = 0
            for entry in added:
                if not isinstance(entry, dict):
                    continue
                if entry.get("special") and isinstance(entry.get("content"), str):
                    added_special.append(entry["content"])
                if isinstance(vocab, dict) and entry.get("content") not in vocab:
                    extra += 1
            if vocab_size is not None:
                vocab_size += extra
    decoder = cfg.get("added_tokens_decoder")
    if isinstance(decoder, dict) and not added_special:
        added_special = [
            v["content"]
            for v in decoder.values()
            if isinstance(v, dict) and v.get("special") and isinstance(v.get("content"), str)
        ]
    template = cfg.get("chat_template")
    template_source = "tokenizer_config.json" if template else None
    if not template and (model_dir / "chat_template.jinja").is_file():
        template_source = "chat_template.jinja"
    elif not template and (model_dir / "chat_template.json").is_file():
        template_source = "chat_template.json"
    summary.update(
        model=model_type,
        vocab_size=vocab_size,
        special_tokens=specials,
        added_special_tokens=added_special[:50],
        chat_template=template_source is not None,
        chat_template_source=template_source,
        model_max_length=cfg.get("model_max_length") if isinstance(cfg.get("model_max_length"), int) else None,
    )
    return summary


def generation_defaults(model_dir: Path) -> dict[str, Any] | None:
    path = model_dir / "generation_config.json"
    if not path.is_file():
        return None
    return read_json_object(path, max_bytes=1024 * 1024, what="generation_config.json")
