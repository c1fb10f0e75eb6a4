"""`llmcli lens`: every layer's top token equals a direct computation with forward hooks and the model's own norm
and LM head; the last layer is the model's output; memory never holds layers × positions × vocabulary."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import PEAK_RSS_KIB, ROOT, assert_clean_error, build_tokenizer, run_cli

PROMPT = "The capital of France is"


def lens(model_dir, args, capsys, monkeypatch, stdin=None):
    run = run_cli(["lens", "-m", str(model_dir), "--dtype", "float32", *args, "--json"], capsys, monkeypatch, stdin)
    assert run.code == 0, run.stderr
    return run.json()


def direct_top1(model_dir, ids, adapter=None):
    """Per layer (embeddings first) and position: the argmax of lm_head(norm(state)), by hooks on the layers."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).eval()
    inner = model.get_base_model() if adapter is not None else model
    states = []

    def first(_module, args, kwargs):
        states.append(args[0] if args else kwargs["hidden_states"])

    hooks = [inner.model.layers[0].register_forward_pre_hook(first, with_kwargs=True)]
    hooks += [layer.register_forward_hook(lambda m, a, out: states.append(out)) for layer in inner.model.layers]
    with torch.inference_mode():
        final = model(input_ids=torch.tensor([ids])).logits[0].float()
        tops = []
        for state in states:
            logits = inner.lm_head(inner.model.norm(state))[0]
            cap = getattr(inner.config, "final_logit_softcapping", None)
            if cap:
                logits = torch.tanh(logits / cap) * cap
            tops.append(logits.argmax(-1).tolist())
    for hook in hooks:
        hook.remove()
    return tops, torch.softmax(final[-1], -1)


def assert_lens_matches_hooks(data, model_dir, adapter=None):
    tops, final = direct_top1(model_dir, data["prompt_token_ids"], adapter)
    grid = [[cell["token_id"] for cell in row] for row in data["grid"]["layers"]]
    assert grid == tops
    last = data["layers"][-1]
    assert last["kl_to_final"] == pytest.approx(0, abs=1e-6) and data["final_check"] < 1e-5
    for candidate in last["top"]:
        assert candidate["prob"] == pytest.approx(float(final[candidate["token_id"]]), abs=1e-5)


def test_default_model_last_layer_is_next_token(default_model_dir, capsys, monkeypatch):
    data = lens(default_model_dir, [PROMPT, "--top", "10", "--positions", "all"], capsys, monkeypatch)
    run = run_cli(["next-token", "-m", str(default_model_dir), PROMPT, "--top", "10", "--json"], capsys, monkeypatch)
    expected = run.json()["candidates"]
    last = data["layers"][-1]
    assert [c["token_id"] for c in last["top"]] == [c["token_id"] for c in expected]
    for got, want in zip(last["top"], expected, strict=True):
        assert got["prob"] == pytest.approx(want["prob"], abs=1e-5)
    assert len(data["layers"]) == 31 and data["layers"][0]["name"] == "embeddings"
    assert data["target"]["token"] == " Paris" and data["answer_layer"] == 30
    assert_lens_matches_hooks(data, default_model_dir)


def tiny_arch(path, kind: str):
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer(path)
    shape = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                 bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    torch.manual_seed(7)
    if kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**shape, tie_word_embeddings=False))
    else:  # tied embeddings, embeddings scaled by sqrt(hidden), a final logit soft-cap
        model = Gemma2ForCausalLM(Gemma2Config(**shape, head_dim=16, final_logit_softcapping=2.0))
    model.save_pretrained(str(path))


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gemma2"])
def test_tiny_architectures_match_hooks(kind, tiny_dir, tmp_path, capsys, monkeypatch):
    path = tiny_dir
    if kind != "llama":
        path = tmp_path / kind
        tiny_arch(path, kind)
    data = lens(path, ["the capital of France is Paris", "--positions", "all"], capsys, monkeypatch)
    assert_lens_matches_hooks(data, path)


def test_adapter_lens_is_the_adapted_model(tiny_dir, tiny_adapter, capsys, monkeypatch):
    data = lens(tiny_dir, [PROMPT, "--positions", "all", "--adapter", str(tiny_adapter)], capsys, monkeypatch)
    assert_lens_matches_hooks(data, tiny_dir, adapter=tiny_adapter)
    plain = lens(tiny_dir, [PROMPT], capsys, monkeypatch)
    assert plain["layers"][-1]["top"] != data["layers"][-1]["top"]


def test_track_positions_and_chat(tiny_dir, capsys, monkeypatch):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    [paris] = tok(" Paris", add_special_tokens=False)["input_ids"]
    data = lens(tiny_dir, [PROMPT, "--track", " Paris", "--positions", "1:3"], capsys, monkeypatch)
    assert data["target"] == {"token_id": paris, "token": " Paris", "tracked": True}
    assert data["track"]["positions"] == [1, 2] == data["grid"]["positions"]
    assert len(data["track"]["prob"]) == len(data["layers"]) and all(len(row) == 2 for row in data["track"]["rank"])
    last = data["layers"][-1]
    above = sum(c["prob"] > last["target"]["prob"] for c in last["top"])
    rank = last["target"]["rank"]
    assert rank == 1 + above if above < len(last["top"]) else rank > len(last["top"])
    everywhere = lens(tiny_dir, [PROMPT, "--track", " Paris"], capsys, monkeypatch)
    assert everywhere["track"]["positions"] == list(range(len(everywhere["prompt_token_ids"])))
    chat = lens(tiny_dir, [PROMPT, "--chat"], capsys, monkeypatch)
    messages = [{"role": "user", "content": PROMPT}]
    expected = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert chat["prompt_token_ids"] == list(expected["input_ids"])


def test_attention_view_equals_eager_attentions(tiny_dir, capsys, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    data = lens(tiny_dir, [PROMPT, "--attention", "--position", "3", "--top", "3"], capsys, monkeypatch)
    attention = data["attention"]
    assert attention["implementation"] == "eager" and attention["position"] == 3
    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir), dtype=torch.float32, attn_implementation="eager")
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([data["prompt_token_ids"]]), output_attentions=True)
    for layer, weights in zip(attention["layers"], out.attentions, strict=True):
        row = weights[0, :, 3, :4]
        assert layer["first_token_share"] == pytest.approx(float(row[:, 0].mean()), abs=1e-5)
        for head in layer["heads"]:
            assert [k["position"] for k in head["top"]] == row[head["head"]].argsort(descending=True)[:3].tolist()
            assert all(k["position"] <= 3 for k in head["top"])
    # The model's own attention setting is back after the pass: no --attention, no eager.
    plain = run_cli(["lens", "-m", str(tiny_dir), PROMPT], capsys, monkeypatch)
    assert plain.code == 0 and "Attention from" not in plain.stdout and "layer" in plain.stdout


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["", "--raw"], 2, "empty prompt"),
        ([PROMPT, "--track", " Paris, France"], 2, "tokens ("),
        ([PROMPT, "--position", "40"], 2, "--position 40: the prompt has"),
        ([PROMPT, "--positions", "3:99"], 2, "--positions 3:99"),
        ([PROMPT, "--positions", "x"], 2, "--positions x: expected"),
        ([PROMPT, "--server", "http://127.0.0.1:9"], 2, "--server: lens needs the model's hidden states"),
        ([PROMPT, "--chat", "--raw"], 2, "contradict"),
    ],
)
def test_bad_input_is_one_line(tiny_dir, capsys, monkeypatch, args, code, needle):
    assert_clean_error(run_cli(["lens", "-m", str(tiny_dir), *args], capsys, monkeypatch), code, needle)


def test_memory_stays_off_layers_by_positions_by_vocab(tmp_path):
    """A wide vocabulary, many layers and positions: O(layers × positions × vocab) would be ~1.2 GB; the lens
    keeps per-layer top-k only (peak growth measured in a fresh process)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer(tmp_path)
    config = LlamaConfig(vocab_size=64000, hidden_size=32, intermediate_size=64, num_hidden_layers=16,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         tie_word_embeddings=True, eos_token_id=tok.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(tmp_path))
    code = f"""
import io, json, sys, contextlib
from llmcli.cli import main
def peak():
    return {PEAK_RSS_KIB}
def run(prompt):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(["lens", "-m", {str(tmp_path)!r}, "--dtype", "float32", prompt, "--positions", "all", "--json"])
        except SystemExit as exc:
            assert not exc.code, exc.code
run("hi")
before = peak()
run("the capital of France is Paris. " * 40)
print(json.dumps({{"grew_kib": peak() - before}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    grew = json.loads(proc.stdout.decode().splitlines()[-1])["grew_kib"]
    # 17 states × ~300 positions × 64000 × 4 bytes = 1.3 GB if kept; a chunk of 64 positions is 16 MB.
    print(f"peak grew by {grew / 1024:.0f} MiB")
    assert grew < 400_000, grew


def test_device_map_with_layers_on_disk_reads_the_same(default_model_dir, capsys, monkeypatch):
    placed_args = [PROMPT, "--device-map", "auto", "--max-memory", "cpu=150MB"]
    placed = lens(default_model_dir, placed_args, capsys, monkeypatch)
    plain = lens(default_model_dir, [PROMPT], capsys, monkeypatch)
    assert [layer["top"][0]["token_id"] for layer in placed["layers"]] == [
        layer["top"][0]["token_id"] for layer in plain["layers"]
    ]
    assert placed["layers"][-1]["top"][0]["prob"] == pytest.approx(plain["layers"][-1]["top"][0]["prob"], abs=1e-5)
