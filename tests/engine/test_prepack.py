"""The CPU's oneDNN kernel: linear weights reordered for oneDNN at load (engine.load.prepack), and the batch's
cache layer that writes each step's column into spare room (engine.batch.kv_room).

Prepacked layers compute what torch's own do (to float32 rounding), for a row alone as among others, a lone
row on the weight sliced across threads too, and the scheduler's rows keep their solo tokens on them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from llmcli.engine.batch import kv_room
from llmcli.engine.load import prepack
from llmcli.engine.load.loader import load
from llmcli.modelfs.source import resolve_model
from llmcli.plan import Dtype, LoadSpec


@pytest.fixture(scope="module")
def plain(tiny_dir):
    return load(resolve_model(str(tiny_dir)), LoadSpec(dtype=Dtype.float32))


@pytest.fixture(scope="module")
def packed(tiny_dir):
    return load(resolve_model(str(tiny_dir)), LoadSpec(dtype=Dtype.float32, prepack=True))


@pytest.fixture(scope="module")
def split(tiny_dir):
    return load(resolve_model(str(tiny_dir)), LoadSpec(dtype=Dtype.float32, prepack=True, split_lone_rows=True))


def logits(loaded, ids):
    import torch

    with torch.inference_mode():
        return loaded.model(input_ids=torch.tensor(ids)).logits


def test_prepacked_layers_compute_what_torch_does_for_any_row_count(plain, packed):
    import random

    import torch

    assert packed.prepacked and not plain.prepacked
    assert type(packed.model.lm_head.forward).__name__ == "partial"
    rng = random.Random(0)
    rows = [[rng.randrange(packed.model.config.vocab_size) for _ in range(11)] for _ in range(5)]
    together = logits(packed, rows)
    assert torch.allclose(together, logits(plain, rows), atol=1e-5, rtol=1e-4)
    for index, row in enumerate(rows):  # alone as among others (bit for bit on AVX2; other CPUs may pick
        alone = logits(packed, [row])[0]  # another oneDNN kernel per row count, so only to rounding here)
        assert torch.allclose(alone, together[index], atol=1e-5, rtol=1e-4)
        assert torch.equal(alone.argmax(-1), together[index].argmax(-1))


def test_a_lone_row_on_the_weight_sliced_across_threads_computes_what_torch_does(plain, split):
    import torch

    layer = torch.nn.Linear(6, 12)
    x = torch.randn(1, 1, 6)
    for threads, ways in ((2, 2), (8, 4), (5, None)):  # one slice per thread where the 12 outputs divide evenly
        slices = prepack._slices(layer.weight.detach(), threads)
        assert (slices is None) if ways is None else slices.shape == (ways, 6, 12 // ways)
        if slices is not None:
            sliced = prepack._lone_row(x, slices, layer.bias)
            assert sliced.shape == (1, 1, 12) and torch.allclose(sliced, layer(x), atol=1e-6)
    assert split.split_lone_rows == (torch.get_num_threads() > 1) and split.prepacked
    row = [[3, 1, 4, 1, 5, 9, 2, 6]]
    assert torch.allclose(logits(split, row), logits(plain, row), atol=1e-5, rtol=1e-4)
    with torch.inference_mode():  # a decoding step: one token, one row
        out = split.model(input_ids=torch.tensor([[7]])).logits
    assert torch.allclose(out, logits(plain, [[7]]), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kernel", ["packed", "split"])
def test_the_scheduler_on_prepacked_layers_keeps_every_row_to_its_solo_tokens(kernel, request):
    from llmcli.engine.batch.scheduler import Scheduler, SchedulerSettings
    from tests.engine.test_batching import MIXED, PROMPTS, drain, queued, solo

    packed = request.getfixturevalue(kernel)
    prompts = [*PROMPTS, PROMPTS[0]]
    alone = [solo(packed, p, pl).token_ids for p, pl in zip(prompts, MIXED, strict=True)]
    streams, gate = queued(packed, prompts, MIXED, Scheduler(SchedulerSettings()))
    gate.set()
    assert [drain(s)[1][0].outputs[0].token_ids for s in streams] == alone


def test_prepacking_applies_on_the_cpu_in_float32_and_bfloat16_and_declines_what_memory_cannot_hold(plain):
    assert prepack.applies(device="cpu", dtype="float32") and prepack.applies(device="cpu", dtype="bfloat16")
    assert not prepack.applies(device="cpu", dtype="float16") and not prepack.applies(device="cuda", dtype="float32")
    assert prepack.refusal(plain.model, available=2**40) is None
    assert "too little of the free memory" in prepack.refusal(plain.model, available=1000)


def test_weights_nothing_else_reads_are_released_once_reordered(plain, packed):
    """The tied output layer keeps its weight (the embeddings read it); every other linear layer's weight is
    let go, leaving a meta-device tensor of its shape, and the logits are the same (the test above)."""
    import torch

    linears = [m for m in packed.model.modules() if isinstance(m, torch.nn.Linear)]
    kept = [m for m in linears if not m.weight.is_meta]
    assert [m is packed.model.lm_head for m in kept] == [True]
    assert packed.model.lm_head.weight is packed.model.model.embed_tokens.weight
    layer = packed.model.model.layers[0].self_attn.q_proj
    twin = plain.model.model.layers[0].self_attn.q_proj
    assert layer.weight.is_meta and layer.weight.shape == twin.weight.shape and layer.weight.dtype == twin.weight.dtype
    from llmcli.server.models import weights_bytes

    released = sum(m.weight.nbytes for m in linears if m.weight.is_meta)
    assert weights_bytes(packed.model) == weights_bytes(plain.model) - released > 0


def test_a_released_weight_mapped_from_a_file_gives_its_whole_pages_back(tmp_path):
    import ctypes
    import mmap

    import torch

    from llmcli.engine.load import pages

    data = bytes(range(256)) * (8 * mmap.PAGESIZE // 256)
    (tmp_path / "weights").write_bytes(data)
    with open(tmp_path / "weights", "rb") as f:
        mapped = mmap.mmap(f.fileno(), len(data), access=mmap.ACCESS_COPY)
    address = ctypes.addressof(ctypes.c_char.from_buffer(mapped))
    ranges = pages.file_ranges()
    # a tensor from the middle of one page to the middle of the fourth after it: three whole pages are its own
    assert pages.drop(address + 100, 4 * mmap.PAGESIZE, ranges) == 3 * mmap.PAGESIZE
    assert mapped[:] == data  # read again, from the file
    anonymous = torch.ones(1 << 20)
    assert pages.drop(anonymous.data_ptr(), anonymous.nbytes, ranges) == 0  # the allocator's: never touched
    assert bool((anonymous == 1).all())


def test_a_read_only_file_mapping_gives_its_pages_back_and_a_written_copy_is_left_alone(tmp_path):
    import mmap

    from llmcli.engine.load import pages

    data = bytes(range(256)) * (512 * mmap.PAGESIZE // 256)  # 2 MiB with 4 KiB pages
    path = tmp_path / "library.so"
    path.write_bytes(data)
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), len(data), access=mmap.ACCESS_READ)
    assert mapped[::4096] == data[::4096]  # every page read, so resident
    assert pages.drop_file_pages(str(path)) == len(data)
    assert mapped[:] == data  # read again, from the file
    with open(path, "rb") as f:
        written = mmap.mmap(f.fileno(), len(data), access=mmap.ACCESS_COPY)
    written[:4] = b"mine"
    mapped.close()
    assert pages.drop_file_pages(str(path)) == 0  # writable: its own pages would be lost
    assert written[:4] == b"mine"


def test_bfloat16_layers_prepacked_compute_what_torch_does_and_are_not_sliced(tiny_dir):
    import torch

    spec = LoadSpec(dtype=Dtype.bfloat16)
    bf16 = load(resolve_model(str(tiny_dir)), spec)
    packed = load(resolve_model(str(tiny_dir)), replace(spec, prepack=True, split_lone_rows=True))
    assert packed.prepacked and not packed.split_lone_rows and not bf16.prepacked
    rows = [[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]]
    for ids in (rows, [[7]]):  # a prefill and a decoding step's one row
        ours, theirs = logits(packed, ids).float(), logits(bf16, ids).float()
        assert torch.allclose(ours, theirs, atol=0.05, rtol=0.05)  # bfloat16's rounding, summed in another order


def test_weights_are_reordered_on_the_engine_thread(tiny_dir, monkeypatch):
    import threading

    threads = []
    real = prepack.prepack
    monkeypatch.setattr(prepack, "prepack", lambda *a, **k: threads.append(threading.current_thread()) or real(*a, **k))
    load(resolve_model(str(tiny_dir)), LoadSpec(dtype=Dtype.float32, prepack=True))
    assert threads and threads[0] is not threading.main_thread()  # decoding from main's reordering was 1.6x slower
    from llmcli.engine.load.worker import engine_thread

    assert engine_thread().submit(threading.current_thread).result() is threads[0]


def test_a_load_on_the_engine_thread_reorders_there_in_place(tiny_dir):
    """serve reloads a model that keep-alive let go inside a forward pass's work, on the engine thread: the
    reordering runs in place there rather than waiting on its own thread for ever."""
    from llmcli.engine.load.worker import engine_thread

    spec = LoadSpec(dtype=Dtype.float32, prepack=True)
    loaded = engine_thread().submit(load, resolve_model(str(tiny_dir)), spec).result(timeout=120)
    assert loaded.prepacked


def test_the_replay_block_says_prepacked_and_replay_loads_the_same_way(packed, split, plain):
    from llmcli.analysis.replay import load_spec
    from llmcli.engine.load.environment import environment

    block = environment(packed)
    assert block["prepacked"] is True and environment(plain)["prepacked"] is False
    assert block["split_lone_rows"] is False and environment(split)["split_lone_rows"] is split.split_lone_rows
    record = {"replay": block, "model": {"path": "x"}}
    assert load_spec(record, {}).prepack and not load_spec({"replay": environment(plain), "model": {}}, {}).prepack
    assert not load_spec(record, {}).split_lone_rows
    assert load_spec({"replay": environment(split), "model": {}}, {}).split_lone_rows is split.split_lone_rows


def test_a_roomy_cache_gives_the_logits_of_transformers_own_across_reallocations(plain, monkeypatch):
    import torch
    from transformers.cache_utils import DynamicCache

    monkeypatch.setattr(kv_room, "ROOM", 2)  # new room every other step
    model = plain.model
    caches = [DynamicCache(config=model.config), kv_room.roomy_cache(model)]
    ids = torch.tensor([[5, 9, 2, 7], [3, 3, 8, 1], [4, 6, 1, 2]])
    with torch.inference_mode():
        outs = [model(input_ids=ids, cache=c, use_cache=True).logits[:, -1] for c in caches]
        for step in range(7):
            assert torch.equal(outs[0], outs[1])
            if step == 3:  # two rows leave, as the batch cuts them out: the layers get new tensors
                for cache in caches:
                    for layer in cache.layers:
                        layer.keys, layer.values = layer.keys[[0, 2]], layer.values[[0, 2]]
                outs = [o[[0, 2]] for o in outs]
            last = outs[0].argmax(-1, keepdim=True)
            outs = [model(input_ids=last, cache=c, use_cache=True).logits[:, -1] for c in caches]
    assert torch.equal(outs[0], outs[1]) and caches[1].get_seq_length() == 11


def test_copies_the_free_memory_cannot_hold_are_declined_with_a_warning(tiny_dir, capsys, monkeypatch):
    from llmcli.engine.load import loader

    monkeypatch.setattr(loader, "device_memory", lambda device: {"device": "cpu", "free_bytes": 1000})
    spec = LoadSpec(dtype=Dtype.float32, prepack=True, memory_check=False)  # the weights' own check passes
    loaded = load(resolve_model(str(tiny_dir)), spec)
    assert not loaded.prepacked and type(loaded.model.lm_head.forward).__name__ == "method"
    err = capsys.readouterr().err
    assert f"{tiny_dir}: linear weights not prepacked for oneDNN" in err and "too little of the free memory" in err
