"""Options shared by several commands, declared once (as huggingface_hub's CLI does with its aliases)."""

from __future__ import annotations

from typing import Annotated

import typer

H_MODEL = "Model"
H_OUT = "Input and output"

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model directory or .gguf file (default: $LLMCLI_MODEL, else the embedded SmolLM2-135M-Instruct).",
        rich_help_panel=H_MODEL,
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=H_MODEL)]
DtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="auto, float32, bfloat16 or float16 (auto: the checkpoint's on CUDA, bfloat16 on CPU).",
        rich_help_panel=H_MODEL,
    ),
]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code", help="Allow code shipped in the model directory to run.", rich_help_panel=H_MODEL
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout and nothing else.", rich_help_panel=H_OUT)]
SystemOpt = Annotated[
    str | None, typer.Option("--system", "-s", help="System message for the chat template.", rich_help_panel=H_OUT)
]
RawOpt = Annotated[bool, typer.Option("--raw", help="Send the text as-is, no chat template.", rich_help_panel=H_OUT)]
FileOpt = Annotated[str | None, typer.Option("--file", "-f", help="Read the text from a file.", rich_help_panel=H_OUT)]
QuantizeOpt = Annotated[
    str,
    typer.Option(
        "--quantize",
        help="none, or int8: torch's dynamic int8 Linear layers on CPU (faster prefill and "
        "decode, small accuracy cost).",
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
    str,
    typer.Option(
        "--attn",
        help="Attention kernel: auto (transformers' choice, SDPA where the model supports it), sdpa, eager, "
        "flash_attention_2, flash_attention_3 or flex_attention.",
        rich_help_panel=H_SPEED,
    ),
]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="Static KV cache + torch.compile of the decoding step (generate()'s cache_implementation='static' "
        "and compile_config). The first decoding step compiles (a minute or more), so it pays off for long "
        "generations; see docs/performance.md.",
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
