"""Many rows through int4 weights on a CPU: codes packed as torch packs them and read back from the packed
buffer exactly, tiles that give the product the kernel gives (to bfloat16's rounding), the layer taking them
from MANY_ROWS rows on, and a model's prefill through them agreeing with the kernel's."""

from __future__ import annotations

import pytest
import torch

from llmcli.engine.quant import cpu_packing, int4_tiles
from llmcli.engine.quant.int4 import Int4Codes
from llmcli.engine.quant.int8 import Int8Codes
from llmcli.engine.quant.layers import Int4Linear, Int8Linear


def _codes(outputs, inputs, group=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (outputs, inputs), generator=generator, dtype=torch.uint8)
    scales = torch.rand(outputs, inputs // group, generator=generator) * 0.02 + 0.001
    zeros = torch.randn(outputs, inputs // group, generator=generator) * 0.05
    return Int4Codes(codes, scales.to(torch.bfloat16).float(), zeros.to(torch.bfloat16).float())


def test_this_cpus_packing_is_known():
    assert cpu_packing.layout() is not None  # the three layouts of torch's CPU kernels (AVX-512, AVX2, plain)


@pytest.mark.parametrize("outputs", [16, 48, 64, 80, 64 * 3 + 16, 256])
def test_codes_packed_as_torch_packs_them_and_read_back(outputs):
    layout = cpu_packing.layout()
    codes = _codes(outputs, 96).codes
    packed = cpu_packing.pack(codes)
    assert cpu_packing._writes_as_torch() == layout and torch.equal(packed, cpu_packing.torch_pack(codes))
    assert torch.equal(cpu_packing.codes_of(packed, 0, outputs, layout), codes)
    block = layout.block
    if outputs > block:  # from a block's edge, across the partial last block
        assert torch.equal(cpu_packing.codes_of(packed, block, outputs, layout), codes[block:])


@pytest.mark.parametrize(("outputs", "inputs"), [(256, 128), (64 * 5 + 48, 64), (32, 96)])
def test_tiles_give_the_kernels_product(outputs, inputs, monkeypatch):
    monkeypatch.setattr(int4_tiles, "TILE_WEIGHTS", 64 * inputs * 2)  # several tiles, the last one narrower
    codes = _codes(outputs, inputs)
    layer = Int4Linear(codes, None, device="cpu")
    x = torch.randn(int4_tiles.MANY_ROWS, inputs).to(torch.bfloat16)
    want = x.float() @ codes.dequantize().t()
    tiles = int4_tiles.product(x, layer.packed, layer.scales_and_zeros, layer.tiles).float()
    kernel = torch.ops.aten._weight_int4pack_mm_for_cpu(x, layer.packed, 32, layer.scales_and_zeros).float()
    scale = want.abs().max()
    assert (tiles - want).abs().max() < 0.01 * scale  # bfloat16 weights and outputs: ~2^-8 of the largest
    assert (kernel - want).abs().max() < 0.01 * scale
    assert (tiles - want).norm() < 0.005 * want.norm()


def test_the_layer_takes_the_tiles_from_many_rows_on(monkeypatch):
    codes = _codes(128, 64)
    layer = Int4Linear(codes, torch.randn(128), device="cpu")
    calls = []
    real = int4_tiles.product
    monkeypatch.setattr(int4_tiles, "product", lambda *a: calls.append(a[0].shape[0]) or real(*a))
    few = torch.randn(2, int4_tiles.MANY_ROWS - 1, 64)  # rows counted over the batch: 2 x (MANY_ROWS - 1)
    one = torch.randn(1, int4_tiles.MANY_ROWS - 1, 64)
    assert layer(few).shape == (2, int4_tiles.MANY_ROWS - 1, 128) and layer(one).shape[:2] == one.shape[:2]
    assert calls == [2 * (int4_tiles.MANY_ROWS - 1)]
    assert torch.allclose(layer(few), few @ codes.dequantize().t() + layer.bias, atol=0.05, rtol=0.02)
    calls.clear()
    assert calls == []


@pytest.mark.parametrize("outputs", [128, 64 * 3 + 16])
def test_int8_takes_its_two_halves_as_two_bfloat16_tiles_finer_than_its_steps(outputs, monkeypatch):
    generator = torch.Generator().manual_seed(1)
    eight_bits = Int8Codes(torch.randint(0, 256, (outputs, 64), generator=generator, dtype=torch.uint8),
                           torch.rand(outputs, 2, generator=generator) * 1e-3 + 1e-4,
                           torch.randn(outputs, 2, generator=generator) * 0.02)  # fmt: skip
    layer = Int8Linear(eight_bits, None, device="cpu")
    calls = []
    real = int4_tiles.pair_product
    monkeypatch.setattr(int4_tiles, "pair_product", lambda *a: calls.append(a[0].shape[0]) or real(*a))
    x = torch.randn(int4_tiles.MANY_ROWS, 64).to(torch.bfloat16)
    want = x.float() @ eight_bits.dequantize().t()
    tiles = layer(x).float()
    assert calls == [int4_tiles.MANY_ROWS]
    kernel = (layer.high(x) + layer.low(x)).float()  # each half through the kernel, as below MANY_ROWS
    # the two tiles hold the weight to ~16 bits: no further from the exact product than the kernel's pair is
    assert (tiles - want).norm() <= 1.5 * (kernel - want).norm() + 1e-6
    assert (tiles - want).abs().max() < 0.01 * want.abs().max()
    monkeypatch.setattr(int4_tiles, "COMPILE_FROM", 0)  # compiled (fused multiply-adds: the last bits may move)
    monkeypatch.setattr(int4_tiles.PAIR_COMPILED, "said", False)
    monkeypatch.setattr(int4_tiles.PAIR_COMPILED, "failed", None)
    compiled = layer(x).float()
    assert calls[-1] == int4_tiles.MANY_ROWS and (compiled - want).norm() <= 1.5 * (kernel - want).norm() + 1e-6


def test_a_long_prompts_prefill_agrees_with_the_kernels(tiny_dir, monkeypatch):
    from llmcli.engine.load.environment import environment
    from llmcli.engine.load.loader import load
    from llmcli.modelfs.source import ModelSource
    from llmcli.plan import LoadSpec, Quantize

    loaded = load(ModelSource(tiny_dir, str(tiny_dir)), LoadSpec(dtype="float32", quantize=Quantize.int4))
    layout = cpu_packing.layout()
    assert environment(loaded)["int4_tiles"] == {"from_rows": int4_tiles.MANY_ROWS, "block": layout.block,
                                                  "split": layout.split}  # fmt: skip
    ids = torch.randint(0, loaded.model.config.vocab_size, (1, int4_tiles.MANY_ROWS + 8))
    with torch.no_grad():
        tiles = loaded.model(ids).logits
        monkeypatch.setattr(int4_tiles, "MANY_ROWS", 10**9)
        kernel = loaded.model(ids).logits
    assert not torch.equal(tiles, kernel)  # two paths were taken
    p, q = torch.log_softmax(kernel, -1), torch.log_softmax(tiles, -1)
    assert float((p.exp() * (p - q)).sum(-1).mean()) < 1e-3
    assert (tiles.argmax(-1) == kernel.argmax(-1)).float().mean() > 0.97


@pytest.mark.parametrize(("capability", "layout"), [("avx2", "Layout(block=32, split=True)"),
                                                    ("default", "Layout(block=32, split=False)")])  # fmt: skip
def test_the_other_cpu_kernels_packings_are_read_too(capability, layout):
    """torch packs for the kernel it dispatches; ATEN_CPU_CAPABILITY makes this CPU take another one."""
    import os
    import subprocess
    import sys

    code = (
        "import torch\nfrom llmcli.engine.quant import cpu_packing as P, int4_tiles as T\n"
        "codes = torch.randint(0, 16, (64 * 3 + 16, 96), dtype=torch.uint8)\n"
        "packed, layout = P.pack(codes), P.layout()\n"
        "assert torch.equal(packed, P.torch_pack(codes)) and P._writes_as_torch() == layout\n"
        "assert torch.equal(P.codes_of(packed, 0, codes.shape[0], layout), codes)\n"
        "x = torch.randn(200, 96).to(torch.bfloat16)\n"
        "pairs = (torch.rand(3, codes.shape[0], 2) / 50).to(torch.bfloat16)\n"
        "kernel = torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, 32, pairs).float()\n"
        "tiles = T.product(x, packed, pairs, layout).float()\n"
        "assert (kernel - tiles).abs().max() < 0.01 * kernel.abs().max()\n"
        "print(layout)\n"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == layout


def test_compiled_tiles_equal_the_plain_ones_and_a_failed_compile_falls_back(monkeypatch, capsys):
    codes = _codes(64 * 3 + 16, 128)
    layer = Int4Linear(codes, None, device="cpu")
    x = torch.randn(int4_tiles.MANY_ROWS, 128).to(torch.bfloat16)
    monkeypatch.setattr(int4_tiles, "TILE_WEIGHTS", 64 * 128 * 2)
    plain = int4_tiles.product(x, layer.packed, layer.scales_and_zeros, layer.tiles)
    monkeypatch.setattr(int4_tiles, "COMPILE_FROM", 0)
    monkeypatch.setattr(int4_tiles.COMPILED, "said", False)
    monkeypatch.setattr(int4_tiles.COMPILED, "failed", None)
    compiled = int4_tiles.product(x, layer.packed, layer.scales_and_zeros, layer.tiles)
    assert torch.equal(compiled, plain)  # the same arithmetic, rounded once to bfloat16 either way
    assert capsys.readouterr().err.count("the int4 prefill tiles compiled and ran in") == 1

    def broken(*args):
        raise RuntimeError("no C++ compiler\nsecond line")

    monkeypatch.setattr(int4_tiles.COMPILED, "compiled", broken)
    again = int4_tiles.product(x, layer.packed, layer.scales_and_zeros, layer.tiles)
    assert torch.equal(again, plain)
    int4_tiles.product(x, layer.packed, layer.scales_and_zeros, layer.tiles)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the compiled int4 prefill tiles failed (no C++ compiler second line)" in err[0]
