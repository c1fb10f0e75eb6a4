"""engine.quant's arithmetic: codes from float weights, the kernels' products against the dequantized weight,
the saved layout's round trip, and GGUF blocks read into codes equal to gguf-py's own dequantization."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmcli.engine.quant import gguf_blocks, int4, saved
from llmcli.engine.quant.layers import Int4Linear, Int8Linear
from llmcli.engine.quant.schemes import SCHEMES

INT4, INT8 = SCHEMES["int4"], SCHEMES["int8"]


def _weight(rows: int = 96, cols: int = 256, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=gen) * 0.05


def _plain_rounding(w, group, bits):
    """Each group's range in 2^bits - 1 steps from its minimum, scale and minimum held in bfloat16: the rounding
    the search replaced, written out here."""
    grouped = w.reshape(w.shape[0], -1, group)
    low, high = grouped.amin(-1), grouped.amax(-1)
    step = ((high - low) / (2**bits - 1)).bfloat16().float()
    low = low.bfloat16().float()
    codes = ((grouped - low[..., None]) / step[..., None]).round().clamp(0, 2**bits - 1)
    return (codes * step[..., None] + low[..., None]).reshape(w.shape)


@pytest.mark.parametrize("scheme", [INT4, INT8])
@pytest.mark.parametrize("group", [32, 64, 128])
def test_the_search_beats_plain_rounding_and_its_scales_are_what_the_kernel_holds(scheme, group):
    w = _weight()
    codes = scheme.quantize(w, group)
    assert codes.codes.dtype == torch.uint8 and int(codes.codes.max()) <= 2**scheme.bits - 1
    for held in (codes.scales, codes.zeros):
        assert torch.equal(held, held.bfloat16().float())
    searched = (codes.dequantize() - w).pow(2).sum()
    plain = (_plain_rounding(w, group, scheme.bits) - w).pow(2).sum()
    assert searched < (0.9 if scheme is INT4 else 1.0) * plain
    step = codes.scales.repeat_interleave(group, dim=1)
    inside = (codes.codes > 0) & (codes.codes < 2**scheme.bits - 1)  # the ends may clip an outlier on purpose
    assert torch.all(((codes.dequantize() - w).abs() <= step / 2 + 1e-6)[inside])


def test_int4_codes_reproduce_weights_already_on_a_4_bit_grid():
    """A group whose weights are minimum + k * step, both exact in bfloat16 (a Q4_1 file's), comes back exactly."""
    gen = torch.Generator().manual_seed(1)
    grid = torch.randint(0, 16, (8, 64), generator=gen).float()
    w = grid * 2**-7 - 0.0625
    w[:, ::32] = -0.0625  # every group holds the minimum and the maximum
    w[:, 1::32] = 15 * 2**-7 - 0.0625
    assert torch.equal(INT4.quantize(w, 32).dequantize(), w)


def test_importance_moves_the_error_onto_the_columns_that_matter_less():
    w = _weight()
    weights = torch.ones(256)
    weights[::4] = 100.0
    plain, weighted = INT4.quantize(w, 32), INT4.quantize(w, 32, importance=weights)
    error = lambda codes: ((codes.dequantize() - w).pow(2) * weights).sum()  # noqa: E731
    assert error(weighted) < 0.9 * error(plain)


def test_groups_all_equal_or_zero_give_finite_codes():
    w = _weight()
    w[0, :32] = 0.0
    w[1, :32] = 0.0123
    codes = INT4.quantize(w, 32)
    back = codes.dequantize()
    assert torch.isfinite(back).all() and torch.isfinite(codes.scales).all()
    assert torch.equal(back[0, :32], torch.zeros(32))
    assert torch.allclose(back[1, :32], torch.full((32,), 0.0123), rtol=2**-8)


def test_the_compiled_search_gives_the_plain_codes_but_for_ties(monkeypatch):
    from llmcli.engine.quant import codes, fast_search

    monkeypatch.setattr(fast_search, "COMPILE_FROM", 0)
    w = _weight(64, 512)
    compiled = fast_search.search(w, 32, bits=4)
    plain = codes.search(w, 32, bits=4)
    assert (compiled[0] != plain[0]).float().mean() < 0.01
    assert torch.allclose(compiled[1], plain[1], rtol=2**-7)


def test_a_weight_searched_in_chunks_of_rows_gets_the_codes_searched_whole(monkeypatch):
    from llmcli.engine.quant import codes, fast_search

    w = _weight(70, 256)
    importance = torch.rand(256) + 0.1
    whole = codes.search(w, 32, bits=4, importance=importance)
    monkeypatch.setattr(fast_search, "CHUNK", 256 * 16)  # 16 rows a chunk, the last one 6
    chunked = fast_search.search(w, 32, bits=4, importance=importance)
    assert all(torch.equal(a, b) for a, b in zip(whole, chunked, strict=True))


@pytest.mark.parametrize("rows", [1, 3, 16])
def test_the_int4_kernel_computes_the_dequantized_product(rows):
    w, bias = _weight(), torch.randn(96) * 0.1
    codes = INT4.quantize(w, 32)
    x = torch.randn(2, rows, 256)
    layer = Int4Linear(codes, bias, device="cpu")
    expected = x.to(torch.bfloat16).float() @ _bf16_scales(codes).dequantize().t() + bias
    out = layer(x)
    assert out.shape == (2, rows, 96) and out.dtype == torch.float32
    assert torch.allclose(out, expected, rtol=2e-2, atol=2e-2 * expected.abs().max().item())


def _bf16_scales(codes):
    return type(codes)(codes.codes, codes.scales.bfloat16().float(), codes.zeros.bfloat16().float())


def test_int8_halves_add_up_to_the_weight_and_the_layer_computes_it():
    w = _weight()
    codes = INT8.quantize(w, 32)
    high, low = codes.halves()
    assert torch.allclose(high.dequantize() + low.dequantize(), codes.dequantize(), atol=1e-6)
    assert (codes.dequantize() - w).norm() / w.norm() < 0.01
    x = torch.randn(4, 256)
    out = Int8Linear(codes, None, device="cpu")(x)
    expected = x.to(torch.bfloat16).float() @ w.t()
    assert torch.allclose(out, expected, atol=3e-2 * expected.abs().max().item())


def _pack_int32(values, bits):
    """Unsigned values [rows, cols] (< 2^bits) packed along the columns, 32 / bits a word: how the files an
    earlier llmcli wrote (pack-quantized) hold their codes; only these tests write them now."""
    per = 32 // bits
    rows, cols = values.shape
    padded = torch.nn.functional.pad(values.to(torch.int64), (0, (-cols) % per)).reshape(rows, -1, per)
    shifts = torch.arange(per, dtype=torch.int64) * bits
    words = (padded << shifts).sum(-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def test_the_unpacker_reads_compressed_tensors_packing():
    gen = torch.Generator().manual_seed(2)
    values = torch.randint(0, 16, (5, 40), generator=gen, dtype=torch.uint8)
    words = _pack_int32(values, 4)
    assert words.dtype == torch.int32 and words.shape == (5, 5)
    assert torch.equal(saved.unpack_int32(words, 4, 40), values)
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    theirs = helpers.pack_to_int32((values.to(torch.int16) - 8).to(torch.int8), 4)
    assert torch.equal(words, theirs)


@pytest.mark.parametrize("scheme", [INT4, INT8])
def test_saved_layers_read_back_to_the_same_codes(scheme):
    w = _weight()
    codes = scheme.quantize(w, 64)
    tensors = saved.tensors("layer", codes, middle=scheme.middle, dtype=torch.float32)
    assert tensors["layer.weight"].dtype == torch.int8
    back = saved.read({k.removeprefix("layer."): v for k, v in tensors.items()}, scheme)
    assert type(back) is scheme.codes and torch.equal(back.codes, codes.codes)
    assert torch.equal(back.scales, codes.scales) and torch.equal(back.zeros, codes.zeros)


def test_layers_saved_packed_with_integer_zero_points_still_read_back():
    """What llmcli wrote before it saved float zeros: pack-quantized, a weight (value - point) * scale."""
    gen = torch.Generator().manual_seed(3)
    values = torch.randint(0, 16, (8, 64), generator=gen, dtype=torch.uint8)
    points = torch.randint(0, 16, (8, 2), generator=gen, dtype=torch.uint8)
    scales = torch.rand(8, 2, generator=gen) * 0.01
    parts = {
        "weight_packed": _pack_int32(values, 4),
        "weight_scale": scales,
        "weight_zero_point": _pack_int32(points.t().contiguous(), 4).t().contiguous(),
        "weight_shape": torch.tensor([8, 64]),
    }
    back = saved.read(parts, INT4)
    expected = (values.float().reshape(8, 2, 32) - points[..., None].float()) * scales[..., None]
    assert torch.allclose(back.dequantize(), expected.reshape(8, 64), atol=1e-6)


def test_int8_saved_per_channel_by_an_earlier_llmcli_still_reads_back():
    w = _weight()
    scales = w.abs().amax(dim=1) / 127
    signed = (w / scales[:, None]).round().to(torch.int8)
    tensors = {
        "weight_packed": _pack_int32((signed.to(torch.int16) + 128).to(torch.uint8), 8),
        "weight_scale": scales[:, None],
        "weight_shape": torch.tensor(list(w.shape)),
    }
    back = saved.read_int8_channel(tensors)
    assert torch.allclose(back.dequantize(), signed.float() * scales[:, None], atol=1e-6)


def test_a_layer_holds_what_the_scheme_table_says_a_weight_costs():
    """The memory check's figure (bytes a weight) against the bytes a real layer holds."""
    from llmcli.engine.quant.layers import held_bytes

    for scheme in (INT4, INT8):
        for group in (32, 128):
            layer = scheme.layer(scheme.quantize(_weight(), group), None, device="cpu")
            assert held_bytes(layer) == pytest.approx(96 * 256 * scheme.bytes_per_weight(group)), (scheme, group)
    assert INT8.bytes_per_weight(32) == 1.25


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
def test_gguf_blocks_are_codes_that_dequantize_as_gguf_does(qtype):
    gguf = pytest.importorskip("gguf")
    kind = gguf.GGMLQuantizationType[qtype]
    w = np.random.default_rng(3).standard_normal((16, 256)).astype(np.float32)
    raw = gguf.quants.quantize(w, kind)
    codes = gguf_blocks.int8_codes(raw) if qtype == "Q8_0" else gguf_blocks.int4_codes(raw, qtype)
    assert codes.group_size == 32
    np.testing.assert_array_equal(codes.dequantize().numpy(), gguf.quants.dequantize(raw, kind))


def test_q4_k_blocks_are_codes_that_dequantize_as_gguf_does():
    """gguf-py cannot write Q4_K, so the blocks are random bytes with sane float16 super-block scales."""
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(4)
    raw = rng.integers(0, 256, size=(8, 2 * 144), dtype=np.uint8)
    blocks = raw.reshape(8, 2, 144)
    blocks[..., 0:2] = np.full((8, 2, 1), 0.01, np.float16).view(np.uint8)
    blocks[..., 2:4] = np.full((8, 2, 1), 0.002, np.float16).view(np.uint8)
    codes = gguf_blocks.int4_codes(raw, "Q4_K")
    expected = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_K)
    np.testing.assert_allclose(codes.dequantize().numpy(), expected, rtol=1e-6, atol=1e-7)


def test_reordering_rows_moves_codes_scales_and_zeros_together():
    codes = INT4.quantize(_weight(), 32)
    order = torch.arange(95, -1, -1)
    moved = gguf_blocks.reorder(codes, order)
    assert torch.equal(moved.dequantize(), codes.dequantize()[order])


@pytest.mark.parametrize(
    ("shape", "group", "device", "why"),
    [
        ((64, 96), 64, "cpu", "not a multiple of the group size 64"),
        ((64, 96), 32, "cpu", None),
        ((64, 192), 64, "cuda", "multiple of 128"),
        ((60, 256), 32, "cuda", "multiple of 8"),
    ],
)
def test_the_kernel_refuses_shapes_by_name(shape, group, device, why):
    reason = int4.refusal(*shape, group, device=device)
    assert (reason is None) if why is None else why in reason


def test_the_shard_reader_gives_what_safetensors_gives(tmp_path):
    from safetensors.torch import load_file, save_file

    from llmcli.engine.quant import shard_reader

    tensors = {
        "b.weight": torch.randn(5, 7).bfloat16(),
        "a.weight": torch.randn(3, 4),
        "c.ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "d.scalar": torch.tensor(1.5, dtype=torch.float16),
        "e.empty": torch.zeros(0, 4),
    }
    save_file(tensors, str(tmp_path / "x.safetensors"))
    got = dict(shard_reader.tensors(tmp_path / "x.safetensors"))
    expected = load_file(str(tmp_path / "x.safetensors"))
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype and torch.equal(got[name], value), name


def test_the_shard_reader_refuses_a_damaged_file_before_reading(tmp_path):
    """(The loader never gets here with one: modelfs.checkpoint reads every header first and names the file.)"""
    from safetensors.torch import save_file

    from llmcli.engine.quant import shard_reader

    path = tmp_path / "x.safetensors"
    save_file({"a": torch.randn(4, 4)}, str(path))
    path.write_bytes(path.read_bytes()[:-10])  # the last tensor runs past the end
    with pytest.raises(Exception, match="incomplete metadata"):
        list(shard_reader.tensors(path))


def test_a_failed_compile_falls_back_to_the_plain_search_with_one_line(monkeypatch, capsys):
    from llmcli.engine.quant import codes, fast_search

    def fails(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(fast_search, "COMPILE_FROM", 0)
    monkeypatch.setattr(fast_search.COMPILED, "compiled", fails)
    monkeypatch.setattr(fast_search.COMPILED, "failed", None)
    w = _weight()
    for _ in range(2):
        got = fast_search.search(w, 32, bits=4)
        assert all(torch.equal(a, b) for a, b in zip(got, codes.search(w, 32, bits=4), strict=True))
    err = capsys.readouterr().err
    assert err.count("the compiled code search failed (no C++ compiler)") == 1 and "Traceback" not in err


def test_the_compiled_search_keeps_its_kernels_in_llmcli_home_and_says_so_once(monkeypatch, capsys, tmp_path):
    from llmcli.engine.quant import fast_search
    from llmcli.modelfs import compile_cache

    monkeypatch.setenv("LLMCLI_HOME", str(tmp_path))
    monkeypatch.delenv(compile_cache.VARIABLE, raising=False)
    assert compile_cache.use_llmcli_cache() == tmp_path / "inductor"
    monkeypatch.setenv(compile_cache.VARIABLE, str(tmp_path / "mine"))
    assert compile_cache.use_llmcli_cache() == tmp_path / "mine"  # the user's choice wins
    monkeypatch.setattr(fast_search, "COMPILE_FROM", 0)
    monkeypatch.setattr(fast_search.COMPILED, "said", False)
    monkeypatch.setattr(fast_search.COMPILED, "failed", None)
    for _ in range(2):
        fast_search.search(_weight(32, 64), 32, bits=4)
    assert capsys.readouterr().err.count("the code search compiled and ran in") == 1
