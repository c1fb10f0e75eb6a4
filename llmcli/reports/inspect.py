"""`inspect` for Hugging Face directories: gathers each section's data (JSON) and its display (Sections)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError
from llmcli.modelfs.checkpoint import Checkpoint, read_checkpoint
from llmcli.modelfs.config import Geometry, config_view, load_config, show_value
from llmcli.modelfs.memory import BYTES_PER_PARAM, memory_report
from llmcli.modelfs.tokenizer import generation_defaults, tokenizer_summary
from llmcli.output import KV, Para, Section, Table
from llmcli.reports import Report, counted
from llmcli.reports.tree import tree_node
from llmcli.units import human_bytes

SECTIONS = ("config", "generation", "tokenizer", "checkpoint", "parameters", "modules", "memory")


def build(model_dir: Path, **options: Any) -> Report:
    """The report for a Hugging Face directory; `options` are `Inspection`'s keyword arguments."""
    return Inspection(model_dir, **options).run()


class Inspection:
    """Collects the report for one model directory, section by section."""

    def __init__(
        self,
        model_dir: Path,
        *,
        sections: list[str],
        tensors: bool = False,
        depth: int | None = None,
        context: int | None = None,
        batch: int = 1,
        device: str = "auto",
        max_memory: dict[str, str] | None = None,
        checkpoint: Checkpoint | None = None,
    ):
        self.dir = model_dir
        self.wanted = sections
        self.list_tensors = tensors
        self.depth = depth
        self.context = context
        self.batch = batch
        self.device = device
        self.max_memory = max_memory  # a placement budget instead of this machine's free memory
        self.meta_model: Any = None  # the architecture on the meta device, once built
        self.remote_checkpoint = checkpoint  # headers read remotely (a Hub model that is not downloaded)
        self.data: dict[str, Any] = {"path": str(model_dir), "format": "huggingface"}
        self.sections: list[Section] = []
        self.checks: list[str] = []

    def run(self) -> Report:
        config = load_config(self.dir)
        groups, geo = config_view(config)
        if geo.problems:
            raise LlmcliError(geo.problems[0].removeprefix("config.json: "), path=self.dir / "config.json")
        if "config" in self.wanted:
            self._config(config, groups)
            from llmcli.reports.remote_code import remote_code_section

            code = remote_code_section(self.dir)
            if code is not None:
                self.data["remote_code"], section = code
                self.sections.append(section)
        if "generation" in self.wanted:
            self._generation()
        if "tokenizer" in self.wanted:
            self._tokenizer()
        needs_checkpoint = {"checkpoint", "parameters", "modules", "memory"} & set(self.wanted)
        ckpt = None
        if needs_checkpoint:
            ckpt = self.remote_checkpoint if self.remote_checkpoint is not None else read_checkpoint(self.dir)
        if ckpt is not None:
            self.checks.extend(ckpt.checks)
        if "checkpoint" in self.wanted and ckpt is not None:
            self._checkpoint(ckpt)
        self._head(config, ckpt)
        if ckpt is not None and self._quantization(config, ckpt):
            ckpt = None  # its tensors are packed codes: counting them as parameters would mislead
        total = None
        if {"parameters", "modules"} & set(self.wanted) or ("memory" in self.wanted and not (ckpt and ckpt.tensors)):
            total = self._architecture(config, geo, ckpt)
        if "memory" in self.wanted:
            if total is None and ckpt is not None and ckpt.tensors:
                total = ckpt.parameters
            self._memory(total, geo)
        self.data["checks"] = self.checks
        self.sections.append(
            Section("Checks", [Para(c, "warn") for c in self.checks] or [Para("no problems found", "ok")])
        )
        return Report(self.data, self.sections)

    def _config(self, config: dict[str, Any], groups: list[tuple[str, list[tuple[str, str, str]]]]) -> None:
        self.data["config"] = config
        blocks: list[Any] = []
        for group, rows in groups:
            blocks.append(Para(group, "head"))
            blocks.append(KV(rows))
        self.sections.append(Section(f"Config ({self.dir / 'config.json'})", blocks))

    def _generation(self) -> None:
        gen = generation_defaults(self.dir)
        self.data["generation_config"] = gen
        if gen is None:
            self.sections.append(
                Section(
                    "Generation config",
                    [Para("no generation_config.json: generate() uses transformers' defaults (greedy)", "dim")],
                )
            )
            return
        sampling = gen.get("do_sample") is True
        rows = [(k, show_value(v), "") for k, v in gen.items()]
        mode = "sampling" if sampling else "greedy unless flags say otherwise"
        self.sections.append(
            Section("Generation config (defaults generate() will use)", [KV(rows), Para(f"decoding: {mode}", "dim")])
        )

    def _tokenizer(self) -> None:
        tok = tokenizer_summary(self.dir)
        self.data["tokenizer"] = tok
        if tok is None:
            self.sections.append(Section("Tokenizer", [Para("no tokenizer files", "dim")]))
            return
        rows = [
            ("class", tok["class"] or "?", "from tokenizer_config.json"),
            ("model", tok["model"] or "?", "tokenization algorithm (tokenizer.json)"),
            ("vocab size", f"{tok['vocab_size']:,}" if tok["vocab_size"] else "?", "base vocab + added tokens"),
            (
                "chat template",
                f"yes ({tok['chat_template_source']})" if tok["chat_template"] else "no",
                "generate applies it unless --raw",
            ),
        ]
        for key, value in tok["special_tokens"].items():
            rows.append((key, value, ""))
        if tok["added_special_tokens"]:
            rows.append(("added special", ", ".join(tok["added_special_tokens"][:12]), ""))
        rows.append(("files", ", ".join(tok["files"]), ""))
        self.sections.append(Section("Tokenizer", [KV(rows)]))

    def _checkpoint(self, ckpt: Checkpoint) -> None:
        shards = [
            {
                "file": s.file,
                "size_on_disk": s.size_on_disk,
                "tensors": s.tensors,
                "parameters": s.parameters,
                "tensor_bytes": s.tensor_bytes,
                "dtypes": s.dtypes,
            }
            for s in ckpt.shards
        ]
        self.data["shards"] = shards
        self.data["checkpoint"] = {
            "format": ckpt.kind,
            "tensors": len(ckpt.tensors),
            "parameters": ckpt.parameters,
            "tensor_bytes": ckpt.tensor_bytes,
            "size_on_disk": sum(s.size_on_disk for s in ckpt.shards),
            "index_total_size": ckpt.index_total_size,
            "pickle_files": ckpt.pickle_files,
        }
        if ckpt.kind != "safetensors":
            text = (
                "no weights in this directory (config only)"
                if ckpt.kind == "none"
                else f"pickle weights only ({', '.join(ckpt.pickle_files)}): not read"
            )
            self.sections.append(Section("Checkpoint", [Para(text, "dim")]))
            return
        rows = [
            [
                s.file,
                human_bytes(s.size_on_disk),
                f"{s.tensors:,}",
                f"{s.parameters:,}",
                ", ".join(f"{d}×{n}" for d, n in sorted(s.dtypes.items())),
            ]
            for s in ckpt.shards
        ]
        rows.append(
            [
                "total",
                human_bytes(sum(s.size_on_disk for s in ckpt.shards)),
                f"{len(ckpt.tensors):,}",
                f"{ckpt.parameters:,}",
                "",
            ]
        )
        blocks: list[Any] = [Table(["file", "size", "tensors", "parameters", "dtypes"], rows, numeric={1, 2, 3})]
        if ckpt.index_total_size is not None:
            same = ckpt.index_total_size == ckpt.tensor_bytes
            blocks.append(
                Para(
                    f"index total_size {ckpt.index_total_size:,} bytes; header byte sum {ckpt.tensor_bytes:,} "
                    + ("(match)" if same else "(MISMATCH)"),
                    "ok" if same else "warn",
                )
            )
        else:
            blocks.append(Para(f"tensor bytes (from headers): {ckpt.tensor_bytes:,}", "dim"))
        if self.list_tensors:
            self.data["tensors"] = [
                {"name": t.name, "dtype": t.dtype, "shape": t.shape, "bytes": t.nbytes, "shard": t.shard}
                for t in ckpt.tensors.values()
            ]
            blocks.append(
                Table(
                    ["tensor", "dtype", "shape", "bytes", "shard"],
                    [[t.name, t.dtype, str(t.shape), f"{t.nbytes:,}", t.shard] for t in ckpt.tensors.values()],
                    numeric={3},
                )
            )
        where = "read remotely, sizes are tensor bytes" if self.remote_checkpoint is not None else "headers"
        self.sections.append(Section(f"Checkpoint (safetensors {where})", blocks))

    def _head(self, config: dict[str, Any], ckpt: Checkpoint | None) -> None:
        """A classification head (a reward model's), from config.json and the headers."""
        from llmcli.reports.head import head_section

        found = head_section(config, ckpt)
        if found is not None:
            self.data["head"], section = found
            self.sections.append(section)

    def _quantization(self, config: dict[str, Any], ckpt: Checkpoint) -> bool:
        """The section for a checkpoint saved quantized (`llmcli quantize`); False if it is not."""
        from llmcli.reports.quantized import quantization

        found = quantization(config, ckpt)
        if found is not None:
            self.data["quantization"], section = found
            self.sections.append(section)
        return found is not None

    def _architecture(self, config: dict[str, Any], geo: Geometry, ckpt: Checkpoint | None) -> int | None:
        from llmcli.engine.meta.arch import (
            CUSTOM_CODE_NOT_USED,
            ArchUnavailable,
            architecture_checks,
            build_meta_model,
            count_parameters,
            module_tree,
        )

        try:
            model = build_meta_model(self.dir, config, geo)
        except ArchUnavailable as exc:
            return self._without_architecture(str(exc), ckpt)
        self.meta_model = model
        if "auto_map" in config:
            self.checks.append(CUSTOM_CODE_NOT_USED.format(cls=type(model).__name__))
        params = count_parameters(model)
        by_dtype = ckpt.by_dtype() if ckpt is not None and ckpt.tensors else {geo.dtype or "float32": params.total}
        self.data["parameters"] = {
            "total": params.total,
            "embedding": params.embedding,
            "non_embedding": params.non_embedding,
            "by_dtype": by_dtype,
            "source": "architecture",
            "class": type(model).__name__,
            "tied": params.tied_groups,
        }
        if "parameters" in self.wanted:
            rows = [
                ("total", counted(params.total), "unique parameters; tied weights counted once"),
                ("embedding", counted(params.embedding), "token embedding + lm_head when not tied"),
                ("non-embedding", counted(params.non_embedding), "what scaling laws call N"),
            ]
            for dtype, n in by_dtype.items():
                rows.append((f"{dtype}", f"{n:,}", "parameters stored in this dtype"))
            blocks: list[Any] = [KV(rows)]
            for names in params.tied_groups:
                blocks.append(Para(f"tied: {' = '.join(names)} (counted once)", "dim"))
            if ckpt is not None and ckpt.tensors and ckpt.parameters != params.total:
                blocks.append(Para(f"checkpoint headers hold {ckpt.parameters:,} parameters", "warn"))
            self.sections.append(Section(f"Parameters ({type(model).__name__}, built on the meta device)", blocks))
        if "modules" in self.wanted:
            tree = module_tree(model, params)
            self.data["modules"] = tree
            blocks = [tree_node(tree, self.depth)]
            if ckpt is not None and ckpt.tensors:
                arch_checks = architecture_checks(model, ckpt.tensors)
                self.checks.extend(arch_checks)
                blocks.append(
                    Para(
                        "checkpoint matches the architecture: every expected parameter present, shapes agree"
                        if not arch_checks
                        else f"{len(arch_checks)} mismatch(es) with the checkpoint, see Checks",
                        "ok" if not arch_checks else "warn",
                    )
                )
            self.sections.append(Section("Modules", blocks))
        return params.total

    def _without_architecture(self, reason: str, ckpt: Checkpoint | None) -> int | None:
        """transformers cannot build it: count from the safetensors headers when there are any."""
        self.checks.append(f"architecture not built: {reason}")
        if ckpt is None or not ckpt.tensors:
            if "parameters" in self.wanted:
                self.sections.append(Section("Parameters", [Para(f"unknown: {reason}, and no checkpoint", "warn")]))
            return None
        total = ckpt.parameters
        self.data["parameters"] = {
            "total": total,
            "embedding": None,
            "non_embedding": None,
            "by_dtype": ckpt.by_dtype(),
            "source": "checkpoint",
            "note": reason,
        }
        if "parameters" in self.wanted:
            blocks = [
                KV([("total", counted(total), "sum of the checkpoint's tensor shapes")]),
                Para(f"architecture not built ({reason}); counted from safetensors headers instead", "warn"),
            ]
            self.sections.append(Section("Parameters", blocks))
        return total

    def _memory(self, total: int | None, geo: Geometry) -> None:
        budget = None
        if self.max_memory:
            from llmcli.plan import memory_amount

            budget = sum(memory_amount(v) for k, v in self.max_memory.items() if k != "disk")
        report = memory_report(total, geo, self.context, self.batch, self.device, budget=budget)
        self.data["memory"] = report
        rows = [
            (
                dtype,
                human_bytes(n),
                f"{BYTES_PER_PARAM[dtype]:g} byte{'' if BYTES_PER_PARAM[dtype] == 1 else 's'} per parameter",
            )
            for dtype, n in report["weights_bytes"].items()
        ]
        kv = report["kv_cache"]
        if kv["bytes_per_token"]:
            rows.append(
                (
                    "KV cache / token",
                    human_bytes(kv["bytes_per_token"]),
                    f"bf16: 2 × {geo.layers} layers × {geo.kv_heads} KV heads × {geo.head_dim} head_dim × 2 bytes",
                )
            )
        if kv["bytes"] is not None:
            rows.append(
                (f"KV cache {kv['context']:,} tok × {kv['batch']}", human_bytes(kv["bytes"]), "context × batch")
            )
        dev = report["device"]
        rows.append((f"{dev['device']} free", human_bytes(dev["free_bytes"]), f"of {human_bytes(dev['total_bytes'])}"))
        blocks: list[Any] = [KV(rows)]
        verdict = report.get("verdict")
        if verdict:
            need = human_bytes(verdict["needed_bytes"])
            where = " within --max-memory" if verdict["within"] == "--max-memory" else ""
            if verdict["fits"]:
                blocks.append(Para(f"fits{where}: bf16 weights + KV cache need {need}", "ok"))
            else:
                blocks.append(
                    Para(
                        f"does not fit{where}: bf16 weights + KV cache need {need}; try --context, int8/int4 "
                        "weights or another device",
                        "warn",
                    )
                )
        if total is None:
            blocks.append(Para("parameter count unknown: weight sizes not computed", "warn"))
        blocks += self._placement()
        self.sections.append(Section("Memory", blocks))

    def _placement(self) -> list[Any]:
        """`--device-map auto`'s placement on this machine (or within --max-memory), from the meta model."""
        if self.meta_model is None:
            return []
        from llmcli.engine.meta.placement import propose

        proposal = propose(self.meta_model, max_memory=self.max_memory)
        self.data["memory"]["placement"] = proposal
        budget = ", ".join(f"{k} {human_bytes(v)}" for k, v in proposal["max_memory_bytes"].items())
        blocks: list[Any] = [Para(f"--device-map auto would place the bf16 weights ({budget} available)", "head")]
        rows = [[d["device"], human_bytes(d["bytes"]), ", ".join(d["modules"])] for d in proposal["devices"]]
        blocks.append(Table(["device", "weights", "modules"], rows, numeric={1}))
        if any(d["device"] == "disk" for d in proposal["devices"]):
            blocks.append(Para("layers on disk are read back at every step: expect it to be slow", "warn"))
        return blocks
