"""Options shared by several commands, declared once (as huggingface_hub's CLI does with its aliases)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmcli.commands.completion import model_paths
from llmcli.plan import Attn, DeviceMap, Dtype, Quantize

H_MODEL = "Model"
H_OUT = "Input and output"
H_DEC = "Decoding (forwarded to generate() only when set)"

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model directory or .gguf file (default: $LLMCLI_MODEL, else the embedded SmolLM2-135M-Instruct).",
        rich_help_panel=H_MODEL,
        autocompletion=model_paths,
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=H_MODEL)]
DeviceMapOpt = Annotated[
    DeviceMap | None,
    typer.Option(
        "--device-map",
        help="A model larger than one device: accelerate spreads its layers over the GPUs, then CPU RAM, then "
        "disk (auto = balanced; sequential fills the first device first).",
        rich_help_panel=H_MODEL,
    ),
]
MaxMemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--max-memory",
        help="With --device-map: the most each device may hold, e.g. cpu=8GiB,cuda:0=20GiB.",
        rich_help_panel=H_MODEL,
    ),
]
OffloadDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--offload-dir", help="With --device-map: the folder for layers that fit on no device.", rich_help_panel=H_MODEL
    ),
]
DtypeOpt = Annotated[
    Dtype,
    typer.Option(
        "--dtype",
        help="auto: bfloat16 on GPUs that have it (float16 checkpoints stay float16); on CPU the faster of "
        "bfloat16 and float32 by a short measurement, kept per CPU, for generation, and float32 for one-pass "
        "commands (next-token, score).",
        rich_help_panel=H_MODEL,
    ),
]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code", help="Allow code shipped in the model directory to run.", rich_help_panel=H_MODEL
    ),
]
TrustDigestOpt = Annotated[
    str | None,
    typer.Option(
        "--trust-remote-code-digest",
        help="Run the model directory's code only if the files that would run hash to this digest "
        "(`llmcli inspect` shows it); implies --trust-remote-code.",
        rich_help_panel=H_MODEL,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout and nothing else.", rich_help_panel=H_OUT)]
SystemOpt = Annotated[
    str | None, typer.Option("--system", "-s", help="System message for the chat template.", rich_help_panel=H_OUT)
]
RawOpt = Annotated[bool, typer.Option("--raw", help="Send the text as-is, no chat template.", rich_help_panel=H_OUT)]
# One-pass commands (next-token, lens) read the raw text by default; --chat wraps it as generate does.
ChatTemplateOpt = Annotated[
    bool,
    typer.Option(
        "--chat", help="Wrap the text in the chat template, as generate does (default: the raw text).",
        rich_help_panel=H_OUT,
    ),
]  # fmt: skip
RawDefaultOpt = Annotated[bool, typer.Option("--raw", hidden=True, help="The default; kept for scripts that pass it.")]
FileOpt = Annotated[str | None, typer.Option("--file", "-f", help="Read the text from a file.", rich_help_panel=H_OUT)]
QuantizeOpt = Annotated[
    Quantize,
    typer.Option(
        "--quantize",
        help="Weight-only, quantized while loading (GGUF files keep their own 4-bit blocks): int4 or int8, per "
        "group (5 and 10 bits a weight at group 32); int8-dynamic: torch's dynamic int8 on CPU (activations too; "
        "measured perplexity x3 on the default model). Costs and speeds: docs/quantization.md.",
        rich_help_panel=H_MODEL,
    ),
]
GroupSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--group-size",
        help="With --quantize int4 or int8: weights per scale and zero, 32, 64, 128 or 256 (default 32).",
        rich_help_panel=H_MODEL,
    ),
]
RevisionOpt = Annotated[
    str | None,
    typer.Option(
        "--revision",
        help="For a Hub id (org/name): the branch, tag or commit in the local HF cache.",
        rich_help_panel=H_MODEL,
    ),
]
H_SPEED = "Speed"
AttnOpt = Annotated[
    Attn,
    typer.Option(
        "--attn",
        help="Attention kernel (auto: transformers' choice, SDPA where the model supports it).",
        rich_help_panel=H_SPEED,
    ),
]
CompileOpt = Annotated[
    bool | None,
    typer.Option(
        "--compile/--no-compile",
        help="Static KV cache + a compiled decoding step (generate()'s cache_implementation='static' and "
        "compile_config). On the CPU, one row: compiled ahead of time once per model, dtype and CPU (a minute) "
        "and kept in llmcli's home; later runs use the kept step even without --compile, --no-compile never. "
        "Elsewhere torch.compile, paid in every process. See docs/performance.md.",
        rich_help_panel=H_SPEED,
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help="CPU threads for torch's operators (torch.set_num_threads; default: torch's choice, the physical cores).",
        rich_help_panel=H_SPEED,
    ),
]
SeedOpt = Annotated[
    int | None,
    typer.Option(
        "--seed", help="Random seed (sampling always runs under one; --json reports it).", rich_help_panel=H_DEC
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Any other GenerationConfig field, key=value (value parsed as JSON).", rich_help_panel=H_DEC
    ),
]
AdapterOpt = Annotated[
    str | None,
    typer.Option(
        "--adapter",
        help="A PEFT LoRA adapter directory to apply (through peft).",
        rich_help_panel=H_MODEL,
        autocompletion=model_paths,
    ),
]
MergeOpt = Annotated[
    bool, typer.Option("--merge", help="Merge the adapter into the weights before generating.", rich_help_panel=H_MODEL)
]
AllowPickleOpt = Annotated[
    bool,
    typer.Option(
        "--allow-pickle", help="Allow .bin (pickle) weights, which can run code when loaded.", rich_help_panel=H_MODEL
    ),
]
MemoryCheckOpt = Annotated[
    bool,
    typer.Option(
        "--memory-check/--no-memory-check",
        help="Refuse models whose weights exceed free device memory.",
        rich_help_panel=H_MODEL,
    ),
]
AssistantOpt = Annotated[
    str | None,
    typer.Option(
        "--assistant-model",
        help="A small draft model with the same tokenizer for assisted decoding (generate()'s assistant_model; "
        "num_assistant_tokens via --set). Greedy output is unchanged; one prompt at a time.",
        rich_help_panel=H_SPEED,
        autocompletion=model_paths,
    ),
]
ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="LLMCLI_SERVER",
        help="Run on a running `llmcli serve` (URL, 'unix:PATH', or 'local' for `serve --local`) instead of "
        "loading the model here; -m names a model it serves. API key: $LLMCLI_API_KEY.",
        rich_help_panel=H_MODEL,
    ),
]
