"""What the model really receives: a text's tokens with their ids, pieces, and character and byte spans.

Needs the tokenizer only (no torch): `llmcli tokenize` and the server's tokenize endpoint share it.
"""

from __future__ import annotations

from typing import Any

from llmcli.errors import UsageError


def token_table(tok: Any, text: str, *, chat: bool, system: str | None) -> dict[str, Any]:
    """The tokenize record without its model: text (as rendered), count, chat, tokens."""
    from llmcli.prompts import chat_messages, check_system

    check_system(chat=chat, system=system)
    rendered = text
    if chat:
        if not getattr(tok, "chat_template", None):
            raise UsageError("--chat: this model's tokenizer has no chat template")
        messages = chat_messages(system, [{"role": "user", "content": text}])
        rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    add_special = not chat  # a rendered template already carries its special tokens
    try:
        enc = tok(rendered, add_special_tokens=add_special, return_offsets_mapping=True)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
    except NotImplementedError:  # slow tokenizers have no offsets
        enc = tok(rendered, add_special_tokens=add_special)
        offsets = [(0, 0)] * len(enc["input_ids"])
    token_ids = list(enc["input_ids"])
    special = set(getattr(tok, "all_special_ids", []) or [])
    pieces = tok.convert_ids_to_tokens(token_ids)
    located = spans(rendered, offsets, pieces)
    rows = [
        {
            "index": i,
            "id": tid,
            "token": pieces[i],
            "text": located[i][0],
            "chars": list(offsets[i]),
            "bytes": [located[i][1], located[i][2]],
            "special": tid in special,
        }
        for i, tid in enumerate(token_ids)
    ]
    return {"text": rendered, "count": len(token_ids), "chat": chat, "tokens": rows}


def _byte_level_map() -> dict[str, int]:
    """GPT-2's byte-level alphabet: every byte shown as one printable character."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def spans(text: str, offsets: list[tuple[int, int]], pieces: list[str]) -> list[tuple[str, int, int]]:
    """For each token: its text and UTF-8 byte span. Byte-level tokens that split one character share its
    character span; the bytes tell them apart, and the character's text goes to the first of them."""
    byte_at = [0]
    for ch in text:
        byte_at.append(byte_at[-1] + len(ch.encode("utf-8")))
    alphabet = _byte_level_map()
    out: list[tuple[str, int, int]] = []
    prev_char_end, prev_byte_end = 0, 0
    for (a, b), piece in zip(offsets, pieces, strict=True):
        if a == b:  # special or empty tokens occupy no text
            out.append(("", byte_at[a], byte_at[a]))
            continue
        shares = out and a < prev_char_end
        start = prev_byte_end if shares else byte_at[a]
        whole_piece = piece and all(ch in alphabet for ch in piece)
        end = min(start + len(piece), byte_at[b]) if whole_piece else byte_at[b]
        out.append(("" if shares else text[a:b], start, end))
        prev_char_end, prev_byte_end = b, end
    return out
