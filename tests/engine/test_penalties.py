"""OpenAI's sampling fields on the command line: --frequency-penalty and --presence-penalty (a logits processor
of llmcli's own, over the output only, as vLLM applies them) and --logit-bias (generate()'s sequence_bias),
each checked against a decoding loop written out here."""

from __future__ import annotations

import pytest

from tests.helpers import assert_clean_error, run_cli

PROMPT = "The capital of France is"


def gen(tiny_dir, args, capsys, monkeypatch):
    base = ["generate", "-m", str(tiny_dir), "--dtype", "float32", "--raw", "--greedy", "--json", PROMPT]
    run = run_cli([*base, *args], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    return run.json()


def greedy_by_hand(direct, prompt_ids, steps, *, frequency=0.0, presence=0.0, bias=None):
    """Greedy decoding, one forward pass a step, with the penalties counted over the output by hand."""
    import torch

    model, _ = direct
    ids, out = list(prompt_ids), []
    with torch.inference_mode():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
            for token in set(out):
                logits[token] -= frequency * out.count(token) + presence
            for token, value in (bias or {}).items():
                logits[token] += value
            out.append(int(torch.argmax(logits)))
            ids.append(out[-1])
    return out


def test_the_processor_subtracts_counts_and_presence_of_the_output_only():
    import torch

    from llmcli.engine.generate.penalties import OutputPenalties

    penalties = OutputPenalties(frequency=0.5, presence=1.0)
    prompt = torch.tensor([[3, 3, 4]])
    scores = torch.zeros(1, 8)
    assert torch.equal(penalties(prompt, scores), scores)  # the first call sees the prompt: nothing generated yet
    after = penalties(torch.tensor([[3, 3, 4, 5, 5, 6]]), torch.zeros(1, 8))
    expected = torch.zeros(1, 8)
    expected[0, 5] = -(0.5 * 2 + 1.0)
    expected[0, 6] = -(0.5 * 1 + 1.0)
    assert torch.equal(after, expected)  # 3 and 4 stand only in the prompt: untouched


def test_penalties_equal_a_decoding_loop_written_out(tiny_dir, direct, capsys, monkeypatch):
    args = ["-n", "16", "--frequency-penalty", "1.5", "--presence-penalty", "0.5"]
    record = gen(tiny_dir, args, capsys, monkeypatch)
    [output] = record["outputs"]
    assert record["generate_kwargs"]["frequency_penalty"] == 1.5
    expected = greedy_by_hand(direct, record["prompt_token_ids"], 16, frequency=1.5, presence=0.5)
    assert output["token_ids"] == expected[: len(output["token_ids"])]
    plain = gen(tiny_dir, ["-n", "16"], capsys, monkeypatch)["outputs"][0]["token_ids"]
    assert plain != output["token_ids"]  # on this model the penalties change the answer


def test_logit_bias_bans_and_forces_tokens(tiny_dir, direct, capsys, monkeypatch):
    first = gen(tiny_dir, ["-n", "4"], capsys, monkeypatch)["outputs"][0]["token_ids"]
    banned = gen(tiny_dir, ["-n", "4", "--logit-bias", f"{first[0]}=-100"], capsys, monkeypatch)
    assert banned["outputs"][0]["token_ids"][0] != first[0]
    assert banned["generate_kwargs"]["sequence_bias"] == [[[first[0]], -100.0]]
    forced = gen(tiny_dir, ["-n", "3", "--logit-bias", "7=100", "--logit-bias", "9=2.5"], capsys, monkeypatch)
    ids = forced["prompt_token_ids"]
    assert forced["outputs"][0]["token_ids"] == greedy_by_hand(direct, ids, 3, bias={7: 100.0, 9: 2.5})


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["--logit-bias", "seven=1"], 2, "--logit-bias expects TOKEN_ID=BIAS"),
        (["--logit-bias", "7=150"], 2, "the bias must be in [-100, 100]"),
        (["--logit-bias", "999999=-100"], 2, "token id 999999 is outside this model's"),
        (["--frequency-penalty", "2.5"], 2, "--frequency-penalty must be in [-2, 2]"),
        (["--presence-penalty", "-3"], 2, "--presence-penalty must be in [-2, 2]"),
    ],
)
def test_bad_values_are_one_line_naming_the_flag(tiny_dir, capsys, monkeypatch, args, code, needle):
    run = run_cli(["generate", "-m", str(tiny_dir), "--dtype", "float32", *args, "hi"], capsys, monkeypatch)
    assert_clean_error(run, code, needle)


def test_show_config_lists_the_penalties_beside_generation_configs_fields(tiny_dir, capsys, monkeypatch):
    args = ["generate", "-m", str(tiny_dir), "--show-config", "--json", "--presence-penalty", "0.4"]
    run = run_cli([*args, "--logit-bias", "3=-1"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    shown = run.json()
    assert shown["overrides"]["presence_penalty"] == 0.4 and shown["effective"]["presence_penalty"] == 0.4
    assert shown["effective"]["sequence_bias"] in ([[[3], -1.0]], {"(3,)": -1.0})
