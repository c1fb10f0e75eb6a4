"""Loading with --quantize int4/int8: quantized while loading (never through a whole float model), the layers
chosen and recorded, outputs equal to the float model with the dequantized weights, a GGUF file's blocks
taken as they are, and `llmcli quantize`'s directories loaded without quantizing again."""

from __future__ import annotations

import shutil

import pytest
import torch

from llmcli.engine.load.loader import load
from llmcli.engine.quant.layers import Int4Linear, Int8Linear
from llmcli.modelfs.source import ModelSource
from llmcli.plan import LoadSpec, Quantize


def _load(path, capsys=None, **spec):
    return load(ModelSource(path, str(path)), LoadSpec(dtype="float32", **spec))


def _logits(loaded, ids):
    with torch.no_grad():
        return loaded.model(ids).logits


def _written_out(weight, group, bits):
    """Per-group min/max rounding written out here, not engine.quant's: each group's range in 2^bits - 1 steps
    from its minimum, back to floats."""
    levels = 2**bits - 1
    grouped = weight.reshape(weight.shape[0], -1, group)
    low, high = grouped.amin(-1, keepdim=True), grouped.amax(-1, keepdim=True)
    step = (high - low) / levels
    return (torch.round((grouped - low) / step).clamp(0, levels) * step + low).reshape(weight.shape)


def _float_copy_with(float_model, names, bits):
    """The float model with each of `names`' weights replaced by its written-out rounding."""
    import copy

    model = copy.deepcopy(float_model)
    for name in names:
        layer = model.get_submodule(name)
        layer.weight.data = _written_out(layer.weight.data, 32, bits)
    return model


def _kl(p_logits, q_logits):
    p, q = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


@pytest.mark.parametrize("scheme", ["int4", "int8"])
def test_quantized_while_loading_and_equal_to_the_dequantized_float_model(tiny_dir, direct, capsys, scheme):
    loaded = _load(tiny_dir, quantize=Quantize(scheme))
    err = capsys.readouterr().err
    kind = Int4Linear if scheme == "int4" else Int8Linear
    layers = [n for n, m in loaded.model.named_modules() if isinstance(m, kind)]
    assert len(layers) == 2 * 7  # q, k, v, o, gate, up, down in each of the two blocks
    assert type(loaded.model.lm_head) is torch.nn.Linear
    assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight  # still tied
    assert "quantized after a whole load" not in err
    assert err.count(f"{scheme}, group 32: 14 linear layers") == 1 and "lm_head (the output layer" in err
    info = loaded.describe()["quantization"]
    assert info["scheme"] == scheme and info["group_size"] == 32 and info["quantized_layers"] == 14
    assert info["kept"] == {"lm_head": "the output layer, tied to the embeddings"}
    float_model, tokenizer = direct
    ids = tokenizer("hello world, this is a test of the quantized layers", return_tensors="pt").input_ids
    bits = int(scheme.removeprefix("int"))
    with torch.no_grad():
        floats = float_model(ids).logits
        expected = _float_copy_with(float_model, layers, bits)(ids).logits
        got = _logits(loaded, ids)
        # each layer, alone: its product against the float weight of the same name (a swap is off by ~1.4)
        for name in layers:
            layer = loaded.model.get_submodule(name)
            x = torch.randn(5, layer.in_features)
            want = x @ float_model.get_submodule(name).weight.t()
            assert (layer(x) - want).norm() < (0.12 if bits == 4 else 0.01) * want.norm(), name
    # The code search against plain min/max rounding (written out above): it moves the logits less.
    assert _kl(floats, got) < (1.0 if bits == 4 else 2.0) * _kl(floats, expected) + 1e-7
    assert (got.argmax(-1) == floats.argmax(-1)).float().mean() > 0.9


def test_a_group_that_does_not_divide_a_layer_leaves_it_in_float_and_says_so(tiny_dir, capsys):
    loaded = _load(tiny_dir, quantize=Quantize.int4, group_size=128)
    err = capsys.readouterr().err
    quantized = {n for n, m in loaded.model.named_modules() if isinstance(m, Int4Linear)}
    assert quantized == {f"model.layers.{i}.mlp.down_proj" for i in range(2)}  # the only 128-input layers
    assert "kept in float: self_attn.q_proj x2, self_attn.k_proj x2" in err
    assert "mlp.up_proj x2 (its 64 inputs are not a multiple of the group size 128)" in err
    assert loaded.describe()["quantization"]["kept"]["model.layers.0.mlp.up_proj"].startswith("its 64 inputs")


def test_an_untied_output_layer_is_quantized_in_int8_from_its_own_weight(tiny_untied_single, capsys):
    from safetensors.torch import load_file

    loaded = _load(tiny_untied_single, quantize=Quantize.int4, group_size=64)
    head = loaded.model.lm_head
    assert isinstance(head, Int8Linear) and head.group_size == 64
    info = loaded.describe()["quantization"]
    assert info["output_layer"] == "lm_head" and "lm_head" not in info["kept"]
    assert "the output layer lm_head in int8" in capsys.readouterr().err
    own = load_file(str(tiny_untied_single / "model.safetensors"))["lm_head.weight"]
    x = torch.randn(3, head.in_features)
    want = x @ own.float().t()
    assert (head(x) - want).norm() < 0.01 * want.norm()  # its own weight, not the embeddings'
    assert loaded.model.model.embed_tokens.weight.dtype == torch.float32


def test_gguf_blocks_are_taken_as_they_are(default_model_dir, capsys):
    """The default model's Q4_1 blocks: each layer's codes dequantize to gguf-py's dequantization of its tensor
    with transformers' row order (exactly, before the kernel's bfloat16 scales)."""
    import gguf
    import numpy as np
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    from llmcli.engine.quant import gguf_blocks, while_loading
    from llmcli.modelfs.default_model import default_gguf

    model = while_loading.empty_model(default_model_dir, dtype="float32", trust=False, attn={})
    names = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.3.mlp.down_proj"]
    makers, left = gguf_blocks.layer_blocks(default_gguf(), model, names)
    assert set(makers) == set(names) and not left
    processor = LlamaTensorProcessor(config=model.config.to_dict())
    for name in names:
        tensor = makers[name][0]
        expected = processor.process(weights=gguf.quants.dequantize(tensor.data, tensor.tensor_type), name=tensor.name)
        made = gguf_blocks.make(makers[name], default_gguf())
        np.testing.assert_array_equal(made.dequantize().numpy(), expected.weights)


def test_a_gguf_model_loads_its_blocks_into_the_kernel(default_model_dir, capsys):
    from llmcli.modelfs.default_model import default_gguf

    loaded = load(ModelSource(default_model_dir, "default", default_gguf()), LoadSpec(quantize=Quantize.int4))
    err = capsys.readouterr().err
    assert "210 linear layers (210 from the GGUF file's own blocks of 32)" in err
    assert loaded.describe()["quantization"]["gguf_blocks"] == 210
    ids = loaded.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = loaded.model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in loaded.tokenizer.decode(out[0, ids.shape[1] :])


@pytest.mark.parametrize(("scheme", "group"), [("int4", 32), ("int8", 32), ("int8", 64)])
@pytest.mark.parametrize("model", ["tiny_dir", "tiny_untied_single"])
def test_the_memory_check_counts_quantized_layers_at_their_size(model, request, capsys, scheme, group):
    """The estimate made before loading against what the loaded model's layers really hold (an untied output
    layer in int8)."""
    from llmcli.engine.load.devices import check_memory
    from llmcli.engine.quant.layers import held_bytes
    from llmcli.modelfs.checkpoint import read_checkpoint

    tiny_dir = request.getfixturevalue(model)
    loaded = _load(tiny_dir, quantize=Quantize(scheme), group_size=group)
    quantized = [m for n, m in loaded.model.named_modules() if isinstance(m, Int4Linear | Int8Linear)
                 and not n.endswith((".high", ".low"))]  # fmt: skip
    held = sum(held_bytes(m) for m in quantized)
    counted = {id(t) for m in quantized for t in m.parameters()}
    rest = sum(4 * p.numel() for p in loaded.model.parameters() if id(p) not in counted)
    tensors = read_checkpoint(tiny_dir).tensors
    assert check_memory(tiny_dir, "float32", "cpu", force=True) == 4 * sum(t.numel for t in tensors.values())
    assert check_memory(tiny_dir, "float32", "cpu", force=True, quantize=scheme, group_size=group) == held + rest


CPUS = [(["avx2", "avx512f", "avx512_bf16"], "bfloat16"), (["avx2", "amx_bf16"], "bfloat16"), (["avx2"], "float32")]


@pytest.mark.parametrize(("flags", "dtype"), CPUS)
def test_serves_default_dtype_follows_the_cpu(flags, dtype, monkeypatch):
    from llmcli.engine.load import devices, environment

    monkeypatch.setattr(environment, "cpu", lambda: {"model": "x", "flags": flags, "machine": "x86_64"})
    assert devices.resolve_dtype("auto", "cpu", {}, serving=True) == dtype
    assert devices.resolve_dtype("auto", "cpu", {}) == "bfloat16"  # generate: bfloat16 on every CPU
    assert devices.resolve_dtype("auto", "cpu", {}, prefill_only=True) == "float32"


def test_a_gguf_layer_whose_blocks_cannot_be_used_is_named_with_the_reason(tiny_dir, capsys, tmp_path):
    """A GGUF with Q8_0 blocks for most layers, one tensor in F32 and one missing: the summary and the record
    say which layers were quantized from float weights instead, and why."""
    import gguf
    import numpy as np
    from safetensors import safe_open

    weights = {}
    for shard in tiny_dir.glob("*.safetensors"):
        with safe_open(str(shard), "np") as f:
            weights |= {k: f.get_tensor(k) for k in f.keys()}
    writer = gguf.GGUFWriter(str(tmp_path / "mixed.gguf"), "llama")
    names = {"mlp.down_proj": "ffn_down", "mlp.up_proj": "ffn_up", "mlp.gate_proj": "ffn_gate",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "self_attn.q_proj": "attn_q"}  # fmt: skip
    for block in range(2):
        for hf, name in names.items():
            w = weights[f"model.layers.{block}.{hf}.weight"].astype(np.float32)
            if name == "attn_q":
                writer.add_tensor(f"blk.{block}.{name}.weight", w)
            else:
                q8 = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
                writer.add_tensor(f"blk.{block}.{name}.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    loaded = load(ModelSource(tiny_dir, "tiny", tmp_path / "mixed.gguf"), LoadSpec(dtype="float32",
                                                                                   quantize=Quantize.int4))  # fmt: skip
    err = capsys.readouterr().err
    assert "14 linear layers (10 from the GGUF file's own blocks of 32)" in err
    assert ("quantized from float weights, not the GGUF's blocks: self_attn.q_proj x2 (its GGUF tensor is F32, not "
            "4- or 8-bit blocks); self_attn.k_proj x2 (its GGUF tensor is missing") in err  # fmt: skip
    info = loaded.describe()["quantization"]
    assert info["gguf_blocks"] == 10 and sorted(info["requantized"]) == sorted(
        f"model.layers.{b}.self_attn.{p}_proj" for b in range(2) for p in "qk"
    )
    v = loaded.model.model.layers[1].self_attn.v_proj  # its Q8_0 blocks, as they are
    assert isinstance(v, Int8Linear)
    x = torch.randn(3, v.in_features)
    raw = gguf.quants.quantize(weights["model.layers.1.self_attn.v_proj.weight"], gguf.GGMLQuantizationType.Q8_0)
    want = x @ torch.from_numpy(gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q8_0)).t()
    assert torch.allclose(v(x), want, atol=0.02 * want.abs().max().item())


def _with_one_weight_as(src, dst, dtype):
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    name = "model.layers.0.mlp.up_proj.weight"
    tensors[name] = tensors[name].to(dtype)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return tensors[name]


def test_a_float8_weight_is_read_and_quantized_like_any_float(tiny_untied_single, tmp_path, capsys):
    from llmcli.engine.quant.schemes import SCHEMES

    weight = _with_one_weight_as(tiny_untied_single, tmp_path / "fp8", torch.float8_e4m3fn)
    loaded = _load(tmp_path / "fp8", quantize=Quantize.int4)
    layer = loaded.model.model.layers[0].mlp.up_proj
    assert isinstance(layer, Int4Linear)
    x = torch.randn(3, layer.in_features)
    want = x @ SCHEMES["int4"].quantize(weight.float(), 32).dequantize().t()
    assert torch.allclose(layer(x), want, atol=0.02 * want.abs().max().item())


def test_an_integer_linear_weight_is_refused_by_name_and_dtype(tiny_untied_single, tmp_path, capsys, monkeypatch):
    from tests.helpers import assert_clean_error, run_cli

    _with_one_weight_as(tiny_untied_single, tmp_path / "u16", torch.uint16)
    run = run_cli(["score", "--model", str(tmp_path / "u16"), "--quantize", "int4", "hello"], capsys, monkeypatch)
    assert_clean_error(run, 1, "model.layers.0.mlp.up_proj.weight is uint16, not a float weight")


def test_a_slow_quantizing_load_offers_llmcli_quantize_once(tiny_dir, capsys, monkeypatch, tmp_path):
    from llmcli.engine.quant import offer

    monkeypatch.setenv("LLMCLI_HOME", str(tmp_path))
    monkeypatch.setattr(offer, "OFFER_AFTER_S", 0.0)
    _load(tiny_dir, quantize=Quantize.int4)
    first = capsys.readouterr().err
    assert f"`llmcli quantize {tiny_dir} OUT --to int4` saves these codes once" in first
    _load(tiny_dir, quantize=Quantize.int4)
    assert "llmcli quantize" not in capsys.readouterr().err  # said once per model and scheme
    _load(tiny_dir, quantize=Quantize.int8, group_size=64)
    assert "--to int8 --group-size 64`" in capsys.readouterr().err
    monkeypatch.setattr(offer, "OFFER_AFTER_S", 3600.0)
    monkeypatch.setenv("LLMCLI_HOME", str(tmp_path / "fresh"))
    _load(tiny_dir, quantize=Quantize.int4)
    assert "llmcli quantize" not in capsys.readouterr().err  # a quick load says nothing
