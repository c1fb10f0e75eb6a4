"""Which model a command uses and how to load it: the options declared once, gathered into `ModelArgs`.

A command decorated with `@model_options("model", "device", ...)` declares `model_args: ModelArgs` and gets
those options; `model_args.spec()` is the engine's LoadSpec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmcli.commands import options as opt
from llmcli.commands.signature import option, with_options
from llmcli.plan import Attn, Dtype, LoadSpec, Quantize

OWN = ("model", "revision", "compile", "adapter", "assistant_model")  # the rest are LoadSpec fields


@dataclass
class ModelArgs:
    model: str | None = None
    revision: str | None = None
    compile: bool | None = None  # --compile / --no-compile / neither (plan.step_mode)
    adapter: str | None = None  # located by with_adapter()
    assistant_model: str | None = None  # a draft model for assisted decoding, loaded like the model
    load: dict[str, Any] = field(default_factory=dict)  # LoadSpec fields the command offers

    def spec(self, **overrides: Any) -> LoadSpec:
        from llmcli import output

        # the CPU's product is measured (engine.load.dtype_probe) unless --compile asks for the compiled step,
        # which multiplies by the weights as they are
        prepack = None if self.compile is not True else False
        return LoadSpec(**{"show_progress": output.stderr_is_tty(), "prepack": prepack, **self.load, **overrides})

    def with_adapter(self, spec: LoadSpec) -> LoadSpec:
        """The spec with --adapter located (a PEFT adapter directory), or unchanged without one."""
        if self.adapter is None:
            return spec
        from dataclasses import replace

        return replace(spec, adapter=locate_adapter(self.adapter, option="--adapter"))

    def refuse_local(self) -> None:
        """With --server the server has loaded the model: an option that configures a local load is refused."""
        from llmcli.errors import UsageError

        local = {k: v for k, v in self.load.items() if v != OPTIONS[k][1]}
        local |= {k: getattr(self, k) for k in OWN[1:] if getattr(self, k)}
        if local:
            name = next(iter(local)).replace("_", "-")
            raise UsageError(f"--{name} configures a model loaded here; with --server the server has loaded it")

    def source(self, *, verbose: bool) -> Any:
        from llmcli.modelfs.source import resolve_model

        return resolve_model(self.model, revision=self.revision, verbose=verbose)


def locate_adapter(path: str, *, option: str) -> Any:
    """A PEFT adapter directory's path, or a usage error naming the option."""
    from llmcli.errors import UsageError
    from llmcli.modelfs.locate import locate

    ref = locate(path)
    if ref.kind != "adapter":
        raise UsageError(f"{option} {path}: not a PEFT adapter directory (no adapter_config.json)")
    return ref.path


def _model_args(values: dict[str, Any]) -> ModelArgs:
    own = {k: values.pop(k) for k in OWN if k in values}
    return ModelArgs(**own, load=values)


OPTIONS: dict[str, tuple[Any, Any]] = {
    "model": (opt.ModelOpt, None),
    "revision": (opt.RevisionOpt, None),
    "device": (opt.DeviceOpt, "auto"),
    "device_map": (opt.DeviceMapOpt, None),
    "max_memory": (opt.MaxMemoryOpt, None),
    "offload_dir": (opt.OffloadDirOpt, None),
    "dtype": (opt.DtypeOpt, Dtype.auto),
    "quantize": (opt.QuantizeOpt, Quantize.none),
    "group_size": (opt.GroupSizeOpt, None),
    "attn": (opt.AttnOpt, Attn.auto),
    "threads": (opt.ThreadsOpt, None),
    "trust_remote_code": (opt.TrustOpt, False),
    "trust_remote_code_digest": (opt.TrustDigestOpt, None),
    "allow_pickle": (opt.AllowPickleOpt, False),
    "memory_check": (opt.MemoryCheckOpt, True),
    "compile": (opt.CompileOpt, None),
    "adapter": (opt.AdapterOpt, None),
    "merge": (opt.MergeOpt, False),
    "assistant_model": (opt.AssistantOpt, None),
}


PLACEMENT = ("device_map", "max_memory", "offload_dir")  # beyond one device; wherever "device" is offered


def model_options(*names: str) -> Callable:
    if "trust_remote_code" in names:  # wherever code may run, it may be pinned
        names = (*names, "trust_remote_code_digest")
    if "quantize" in names:
        names = (*names, "group_size")
    params = [option(name, *OPTIONS[name]) for name in names]
    return with_options(params, into="model_args", build=_model_args)
