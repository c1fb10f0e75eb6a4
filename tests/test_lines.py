"""Lines end at "\n", "\r\n" or "\r" only: a record whose strings hold U+2028, U+0085 and kin stays one record,
in a file, a prompt list and a chunked HTTP body alike."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from llmcli.jobs import answered
from llmcli.lines import iter_lines, split_lines
from llmcli.prompts import batch_prompts

# what str.splitlines() breaks on besides the three ends; json.dumps(ensure_ascii=False) leaves the last three raw
OTHER_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
ENDS = ["\n", "\r\n", "\r"]


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n") | st.sampled_from(OTHER_BREAKS))),
    ends=st.lists(st.sampled_from(ENDS), min_size=1),
    cuts=st.lists(st.integers(0, 10_000)),
)
def test_any_chunking_gives_the_lines_written(lines, ends, cuts):
    chosen = [ends[i % len(ends)] for i in range(len(lines))]
    for i in reversed(range(len(lines) - 1)):  # "\r" then an empty line's "\n" is one "\r\n": a writer never means two
        if chosen[i] == "\r" and not lines[i + 1] and chosen[i + 1] != "\r":
            chosen[i] = "\n"
    text = "".join(line + end for line, end in zip(lines, chosen, strict=True))
    assert split_lines(text) == lines
    edges = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    chunks = [text[a:b] for a, b in zip(edges, edges[1:], strict=False)]
    assert list(iter_lines(chunks)) == lines  # a "\r\n" cut in two is one end, not two


def test_a_last_line_without_its_end_is_still_a_line():
    assert split_lines("a\nb") == ["a", "b"] and list(iter_lines(["a\r", "\r"])) == ["a", ""]


def test_prompts_and_job_outputs_keep_records_whole(tmp_path):
    prompts = [f"one{OTHER_BREAKS}", "two\u2028three"]
    file = tmp_path / "prompts.jsonl"
    file.write_text("".join(json.dumps({"prompt": p}, ensure_ascii=False) + "\n" for p in prompts), encoding="utf-8")
    assert batch_prompts(False, str(file), None) == prompts
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"prompt": prompts[0], "text": "x\x85y"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert answered(out, prompts) == 1
