"""The flag → generate() kwargs mapping, tested as a pure function (no model)."""

import pytest

from llmcli.errors import UsageError
from llmcli.genargs import DecodingFlags, build_generate_kwargs, effective_config, parse_set_value


def kw(**flags):
    return build_generate_kwargs(DecodingFlags(**flags))


def test_nothing_set_passes_nothing():
    assert kw() == {}


def test_each_flag_forwarded_under_its_own_name():
    got = kw(
        max_new_tokens=7,
        min_new_tokens=2,
        num_beams=3,
        length_penalty=0.5,
        repetition_penalty=1.2,
        no_repeat_ngram_size=3,
        num_return_sequences=2,
        early_stopping="true",
    )
    assert got == {
        "max_new_tokens": 7,
        "min_new_tokens": 2,
        "num_beams": 3,
        "length_penalty": 0.5,
        "repetition_penalty": 1.2,
        "no_repeat_ngram_size": 3,
        "num_return_sequences": 2,
        "early_stopping": True,
    }


@pytest.mark.parametrize(
    "name,value", [("temperature", 0.7), ("top_p", 0.95), ("top_k", 50), ("min_p", 0.05), ("typical_p", 0.9)]
)
def test_sampling_flag_turns_sampling_on(name, value):
    assert kw(**{name: value}) == {name: value, "do_sample": True}


def test_seed_example_from_the_seed_note():
    assert kw(top_p=0.95, temperature=0.7) == {"temperature": 0.7, "top_p": 0.95, "do_sample": True}


def test_greedy_and_do_sample_forwarded():
    assert kw(do_sample=False) == {"do_sample": False}
    assert kw(do_sample=True) == {"do_sample": True}


def test_temperature_zero_means_greedy():
    assert kw(temperature=0) == {"do_sample": False}


@pytest.mark.parametrize(
    "flags,message",
    [
        ({"do_sample": False, "temperature": 0.7}, "--greedy contradicts --temperature"),
        ({"num_beams": 0}, "--num-beams"),
        ({"top_p": 1.5}, "--top-p must be in (0, 1]"),
        ({"top_p": 0.0}, "--top-p"),
        ({"temperature": -1.0}, "--temperature"),
        ({"min_p": 2.0}, "--min-p"),
        ({"max_new_tokens": 0}, "--max-new-tokens"),
        ({"min_new_tokens": 9, "max_new_tokens": 3}, "exceeds"),
        ({"num_beams": 2, "num_return_sequences": 3}, "cannot exceed"),
        ({"temperature": 0.0, "top_k": 5}, "greedy"),
        ({"early_stopping": "maybe"}, "--early-stopping"),
        ({"stop": [""]}, "--stop"),
        ({"temperature": float("nan")}, "nan"),
    ],
)
def test_contradictions_are_usage_errors(flags, message):
    with pytest.raises(UsageError) as err:
        kw(**flags)
    assert message in err.value.message
    assert err.value.exit_code == 2


def test_stop_strings_deduplicated_in_order():
    assert kw(stop=["\n\n", "END", "\n\n"]) == {"stop_strings": ["\n\n", "END"]}


def test_set_passes_other_fields_parsed_as_json():
    assert kw(extra=["epsilon_cutoff=0.001", "bad_words_ids=[[1,2]]", "cache_implementation=static"]) == {
        "epsilon_cutoff": 0.001,
        "bad_words_ids": [[1, 2]],
        "cache_implementation": "static",
    }
    assert parse_set_value("true") is True
    assert parse_set_value("hello") == "hello"


@pytest.mark.parametrize(
    "item,message",
    [
        ("novalue", "key=value"),
        ("num_beam_groups=2", "Hub"),
        ("stop_strings=[1]", "dedicated flag"),
        ("=3", "key=value"),
    ],
)
def test_set_rejects(item, message):
    with pytest.raises(UsageError) as err:
        kw(extra=[item])
    assert message in err.value.message


def test_set_cannot_repeat_a_flag():
    with pytest.raises(UsageError):
        kw(top_k=5, extra=["top_k=6"])


def test_effective_config_keeps_model_defaults_and_validates_with_generation_config():
    merged = effective_config({"do_sample": True, "temperature": 0.6, "top_p": 0.9}, {"max_new_tokens": 5})
    assert merged["temperature"] == 0.6 and merged["top_p"] == 0.9 and merged["max_new_tokens"] == 5
    with pytest.raises(UsageError, match="not a GenerationConfig field"):
        effective_config({}, {"no_such_field": 1})
    with pytest.raises(UsageError, match="num_return_sequences"):
        effective_config({}, {"num_return_sequences": 3})
    with pytest.raises(UsageError, match="cache_implementation"):
        effective_config({}, {"cache_implementation": "bogus"})


def test_effective_config_tolerates_inconsistent_model_defaults():
    # A model shipping temperature without do_sample is the model's business, not a user error.
    assert effective_config({"temperature": 0.6}, {"max_new_tokens": 3})["max_new_tokens"] == 3


def test_compile_maps_to_static_cache_and_compile_config():
    assert kw(compile=True) == {"cache_implementation": "static", "compile_config": {}}
    merged = kw(compile=True, extra=['compile_config={"mode": "default"}'])
    assert merged["compile_config"] == {"mode": "default"}
    with pytest.raises(UsageError, match="cache_implementation"):
        kw(compile=True, extra=["cache_implementation=dynamic"])
    with pytest.raises(UsageError, match="JSON object"):
        kw(extra=["compile_config=fast"])


def test_for_generate_builds_a_compile_config_for_every_device():
    from transformers.generation.configuration_utils import CompileConfig

    from llmcli.genargs import for_generate

    plain = {"max_new_tokens": 3}
    assert for_generate(plain) is plain
    call = for_generate({"cache_implementation": "static", "compile_config": {"mode": "default"}})
    assert isinstance(call["compile_config"], CompileConfig)
    assert call["compile_config"].mode == "default" and call["compile_config"]._compile_all_devices is True
    with pytest.raises(UsageError, match="compile_config"):
        for_generate({"compile_config": {"no_such_field": 1}})
