"""Loading with --quantize int4/int8: quantized while loading (never through a whole float model), the layers
chosen and recorded, outputs equal to the float model with the dequantized weights, a GGUF file's blocks
taken as they are, and `llmcli quantize`'s directories loaded without quantizing again."""

from __future__ import annotations

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


def _dequantized_copy(loaded, float_model):
    """The float model with each quantized layer's weight replaced by what its codes stand for (scales and
    zeros rounded to bfloat16, as the kernel reads them)."""
    import copy

    model = copy.deepcopy(float_model)
    for name, layer in loaded.model.named_modules():
        if isinstance(layer, Int4Linear | Int8Linear) and not name.endswith((".high", ".low")):
            model.get_submodule(name).weight.data = _weight_of(layer)
    return model


def _weight_of(layer):
    eye = torch.eye(layer.in_features)
    with torch.no_grad():
        return layer(eye.to(torch.bfloat16).float()).t() - (0 if layer.bias is None else layer.bias[:, None])


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
    assert info["kept"] == {"lm_head": "the output layer, by measurement"}
    float_model, tokenizer = direct
    ids = tokenizer("hello world, this is a test", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = _dequantized_copy(loaded, float_model)(ids).logits
    got = _logits(loaded, ids)
    assert torch.allclose(got, expected, atol=0.05 * expected.abs().max().item())
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.9


def test_a_group_that_does_not_divide_a_layer_leaves_it_in_float_and_says_so(tiny_dir, capsys):
    loaded = _load(tiny_dir, quantize=Quantize.int4, group_size=128)
    err = capsys.readouterr().err
    quantized = {n for n, m in loaded.model.named_modules() if isinstance(m, Int4Linear)}
    assert quantized == {f"model.layers.{i}.mlp.down_proj" for i in range(2)}  # the only 128-input layers
    assert "kept in float: self_attn.q_proj x2, self_attn.k_proj x2" in err
    assert "mlp.up_proj x2 (its 64 inputs are not a multiple of the group size 128)" in err
    assert loaded.describe()["quantization"]["kept"]["model.layers.0.mlp.up_proj"].startswith("its 64 inputs")


def test_an_untied_single_file_model_loads_its_own_head(tiny_untied_single, capsys):
    loaded = _load(tiny_untied_single, quantize=Quantize.int4, group_size=64)
    head = loaded.model.lm_head.weight
    assert head.data_ptr() != loaded.model.model.embed_tokens.weight.data_ptr()
    assert head.device.type == "cpu" and head.dtype == torch.float32


def test_gguf_blocks_are_taken_as_they_are(default_model_dir, capsys):
    """The default model's Q4_1 blocks: each layer's codes dequantize to gguf-py's dequantization of its tensor
    with transformers' row order (exactly, before the kernel's bfloat16 scales)."""
    import gguf
    import numpy as np
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    from llmcli.engine.quant import gguf_blocks, stream
    from llmcli.modelfs.default_model import default_gguf

    model = stream.empty_model(default_model_dir, dtype="float32", trust=False, attn={})
    names = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.3.mlp.down_proj"]
    makers, left = gguf_blocks.layer_blocks(default_gguf(), model, names)
    assert set(makers) == set(names) and not left
    processor = LlamaTensorProcessor(config=model.config.to_dict())
    for name in names:
        tensor = makers[name][0]
        expected = processor.process(weights=gguf.quants.dequantize(tensor.data, tensor.tensor_type), name=tensor.name)
        np.testing.assert_array_equal(gguf_blocks.make(makers[name]).dequantize().numpy(), expected.weights)


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


def test_the_memory_check_counts_quantized_layers_at_their_size(tiny_dir):
    from llmcli.engine.load.devices import QUANTIZED_BYTES, check_memory
    from llmcli.modelfs.checkpoint import read_checkpoint

    tensors = read_checkpoint(tiny_dir).tensors
    assert all(t.dtype == "F32" for t in tensors.values())
    linear = sum(t.numel for name, t in tensors.items() if len(t.shape) == 2 and "embed" not in name)
    rest = sum(t.numel for t in tensors.values()) - linear
    assert 0 < linear and 0 < rest
    assert check_memory(tiny_dir, "float32", "cpu", force=True) == 4 * (linear + rest)
    assert check_memory(tiny_dir, "float32", "cpu", force=True, quantize="int4") == int(
        linear * QUANTIZED_BYTES["int4"] + 4 * rest
    )


CPUS = [(["avx2", "avx512f", "avx512_bf16"], "bfloat16"), (["avx2", "amx_bf16"], "bfloat16"), (["avx2"], "float32")]


@pytest.mark.parametrize(("flags", "dtype"), CPUS)
def test_serves_default_dtype_follows_the_cpu(flags, dtype, monkeypatch):
    from llmcli.engine.load import devices, environment

    monkeypatch.setattr(environment, "cpu", lambda: {"model": "x", "flags": flags, "machine": "x86_64"})
    assert devices.resolve_dtype("auto", "cpu", {}, serving=True) == dtype
    assert devices.resolve_dtype("auto", "cpu", {}) == "bfloat16"  # generate: bfloat16 on every CPU
    assert devices.resolve_dtype("auto", "cpu", {}, prefill_only=True) == "float32"
