"""engine.load.cpu_attention: on the CPU in bfloat16 under `--attn auto`, a decoding step's attention is
transformers' SDPA on float32 copies (torch's bfloat16 CPU kernel was several times slower); prefills, other
dtypes and an explicit --attn keep what transformers loaded."""

from __future__ import annotations

import pytest

from llmcli.engine.load import cpu_attention
from llmcli.engine.load.loader import load
from llmcli.modelfs.source import resolve_model
from llmcli.plan import Attn, Dtype, LoadSpec


@pytest.fixture(scope="module")
def narrow(tiny_dir):
    return load(resolve_model(str(tiny_dir)), LoadSpec(dtype=Dtype.bfloat16))


def test_installed_only_for_a_narrow_dtype_on_the_cpu_under_auto(narrow, tiny_dir):
    assert narrow.attn == cpu_attention.NAME
    source = resolve_model(str(tiny_dir))
    assert load(source, LoadSpec(dtype=Dtype.float32)).attn == "sdpa"
    assert load(source, LoadSpec(dtype=Dtype.bfloat16, attn=Attn.sdpa)).attn == "sdpa"  # the flag is kept
    assert load(source, LoadSpec(dtype=Dtype.bfloat16, prefill_only=True)).attn != cpu_attention.NAME


def test_a_step_is_sdpa_on_float32_copies_and_a_prefill_is_sdpa_itself(narrow):
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = narrow.model.model.layers[0].self_attn
    config = narrow.model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dim = config.hidden_size // heads
    gen = torch.Generator().manual_seed(0)
    keys, values = (torch.randn(1, kv_heads, 37, dim, generator=gen).bfloat16() for _ in range(2))
    one = torch.randn(1, heads, 1, dim, generator=gen).bfloat16()
    out, _ = cpu_attention.attention(module, one, keys, values, None)
    wide, _ = sdpa_attention_forward(module, one.float(), keys.float(), values.float(), None)
    assert out.dtype == torch.bfloat16 and torch.equal(out, wide.to(torch.bfloat16))
    assert module.num_key_value_groups > 1  # grouped heads: the step folds them onto their key/value head
    rows = torch.randn(3, heads, 1, dim, generator=gen).bfloat16()
    three = [t.expand(3, -1, -1, -1) for t in (keys, values)]
    padded = torch.ones(3, 1, 1, 37, dtype=torch.bool)
    padded[1:, ..., :4] = False
    out, _ = cpu_attention.attention(module, rows, *three, padded)
    wide, _ = sdpa_attention_forward(module, rows.float(), *(t.float() for t in three), padded)
    assert out.shape == (3, 1, heads, dim) and torch.equal(out, wide.to(torch.bfloat16))
    many = torch.randn(1, heads, 5, dim, generator=gen).bfloat16()
    mask = torch.ones(1, 1, 5, 37, dtype=torch.bool).tril(32)
    out, _ = cpu_attention.attention(module, many, keys, values, mask)
    assert torch.equal(out, sdpa_attention_forward(module, many, keys, values, mask)[0])
    out, _ = cpu_attention.attention(module, many, keys.float(), values.float(), mask)  # serve's float32 cache
    wide, _ = sdpa_attention_forward(module, many.float(), keys.float(), values.float(), mask)
    assert out.dtype == torch.bfloat16 and torch.equal(out, wide.to(torch.bfloat16))


def test_decoding_with_it_follows_the_plain_model_to_bfloat16_rounding(narrow, tiny_dir):
    import torch

    plain = load(resolve_model(str(tiny_dir)), LoadSpec(dtype=Dtype.bfloat16, attn=Attn.sdpa))
    ids = torch.tensor([[5, 9, 13, 2, 7, 11]])
    with torch.inference_mode():
        ours = narrow.model.generate(ids, max_new_tokens=6, do_sample=False, output_logits=True,
                                     return_dict_in_generate=True)  # fmt: skip
        theirs = plain.model.generate(ids, max_new_tokens=6, do_sample=False, output_logits=True,
                                      return_dict_in_generate=True)  # fmt: skip
    first = ours.logits[1].float()  # a decoding step's logits (the first comes from the prefill, the same path)
    assert torch.allclose(first, theirs.logits[1].float(), atol=0.05, rtol=0.05)


def test_a_padded_batch_is_masked_as_under_sdpa(narrow, tiny_dir):
    """transformers builds no mask for an attention name its mask registry lacks: the padded row would attend
    to its padding (and a sliding-window model past its window)."""
    import torch

    plain = load(resolve_model(str(tiny_dir)), LoadSpec(dtype=Dtype.bfloat16, attn=Attn.sdpa))
    ids = torch.tensor([[0, 0, 0, 0, 5, 9], [5, 9, 13, 2, 7, 11]])
    mask = torch.tensor([[0, 0, 0, 0, 1, 1], [1, 1, 1, 1, 1, 1]])
    flags = {"max_new_tokens": 3, "do_sample": False, "output_logits": True, "return_dict_in_generate": True}
    with torch.inference_mode():
        ours, theirs = (m.model.generate(ids, attention_mask=mask, pad_token_id=0, **flags) for m in (narrow, plain))
    for step in (0, 1):  # the prefill, then a decoding step
        assert torch.allclose(ours.logits[step].float(), theirs.logits[step].float(), atol=0.05, rtol=0.05)


def test_a_static_cache_call_keeps_plain_sdpa(narrow):
    """generate() calls a static cache's step (and so the compiled one) under plain SDPA."""
    from llmcli.engine.generate.attention import attention_for_call, choose

    assert choose(narrow, 10, static_cache=True) == "sdpa" and choose(narrow, 10, static_cache=False) is None
    with attention_for_call(narrow, 10, True) as used:
        assert used == "sdpa" and narrow.attn == "sdpa"
    assert narrow.attn == cpu_attention.NAME


def test_the_compiled_step_is_traced_and_keyed_with_the_float32_step(narrow, tiny_dir, tmp_path, capsys,
                                                                     monkeypatch):  # fmt: skip
    """The library is traced with the load's float32 decoding step, not the plain SDPA generate() calls it under
    (torch's bfloat16 flash attention is the slow one), and its key says so."""
    import torch

    from llmcli.engine.step.compiled import step_for
    from tests.helpers import run_cli

    assert step_for(narrow).key["attention"] == cpu_attention.NAME
    traced, export = [], torch.export.export

    def recording(module, *args, **kwargs):
        traced.append(module.model.config._attn_implementation)
        return export(module, *args, **kwargs)

    monkeypatch.setattr(torch.export, "export", recording)
    monkeypatch.setenv("LLMCLI_HOME", str(tmp_path))  # a home of its own: the library is built here
    args = ["generate", "-m", str(tiny_dir), "--dtype", "bfloat16", "hello", "--greedy", "-n", "6", "--json"]
    run = run_cli([*args, "--compile"], capsys, monkeypatch)
    assert run.code == 0 and run.json()["stats"]["compiled_step"] == "built", run.stderr
    assert traced == [cpu_attention.NAME]
