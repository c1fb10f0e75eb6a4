"""The logit lens: one forward pass, the residual stream after the embeddings and after every decoder layer,
each read through the model's own final norm and LM head.

Only the states are kept (layers × positions × hidden); each layer's distribution over the vocabulary lives
for one chunk of positions at a time and is reduced to its top tokens, the target's probability and rank,
and the KL to the final layer before the next one is computed.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from llmcli.errors import LlmcliError

NORM_NAMES = ("norm", "final_layernorm", "ln_f", "norm_f", "final_norm")  # the base model's final norm
CHUNK = 64  # positions whose full-vocabulary distributions exist at once


@dataclass
class LensParts:
    """What the model applies between its residual stream and its logits, found through its own API."""

    layers: list[Any]
    norm: Any
    head: Any
    softcap: float | None = None  # Gemma 2's final logit soft-cap: cap · tanh(logits / cap)
    scale: float = 1.0  # logits multiplied by this after the head (Cohere's logit_scale, 1/Granite's scaling)
    attention_class: type | None = None


@dataclass
class Cell:
    """One layer at one position: its top tokens, the target's probability and rank, KL(final ‖ layer)."""

    top: list[tuple[int, float]]
    target_prob: float
    target_rank: int
    kl_to_final: float


@dataclass
class Pass:
    """What one captured forward pass gives: cells[layer][i] for positions[i]; layer 0 is the embeddings."""

    positions: list[int]
    targets: list[int]
    cells: list[list[Cell]]
    final_check: float  # max |P_lens - P_model| of the last layer at the last position
    attention: list[Any] = field(default_factory=list)  # per layer: [heads, keys] weights of one position


def _unwrapped(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _recorded_class(decoder: Any, key: str) -> type | None:
    recorded = getattr(decoder, "_can_record_outputs", None) or {}
    target = recorded.get(key)
    target = getattr(target, "target_class", target)
    return target if isinstance(target, type) else None


def _decoder_layers(decoder: Any, count: int | None) -> list[Any]:
    layer_class = _recorded_class(decoder, "hidden_states")
    if layer_class is not None:
        layers = [m for m in decoder.modules() if isinstance(m, layer_class)]
        if layers:
            return layers[:count] if count else layers
    import torch

    lists = [m for m in decoder.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == count]
    if not lists:
        raise LlmcliError("the lens cannot find this model's decoder layers")
    return list(lists[0])


def lens_parts(model: Any) -> LensParts:
    """The decoder layers, the final norm and the LM head, or one line naming what the model lacks."""
    inner = _unwrapped(model)
    config = inner.config.get_text_config() if hasattr(inner.config, "get_text_config") else inner.config
    decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else getattr(inner, "base_model", inner)
    head = inner.get_output_embeddings()
    if head is None:
        raise LlmcliError(f"{type(inner).__name__} has no LM head (get_output_embeddings() is None)")
    norm = next((getattr(decoder, n) for n in NORM_NAMES if getattr(decoder, n, None) is not None), None)
    if norm is None:
        raise LlmcliError(f"{type(decoder).__name__} has no final norm the lens knows ({', '.join(NORM_NAMES)})")
    scale = float(getattr(config, "logit_scale", None) or 1.0)
    if getattr(config, "logits_scaling", None):
        scale /= float(config.logits_scaling)
    return LensParts(
        layers=_decoder_layers(decoder, getattr(config, "num_hidden_layers", None)),
        norm=norm,
        head=head,
        softcap=getattr(config, "final_logit_softcapping", None),
        scale=scale,
        attention_class=_recorded_class(decoder, "attentions"),
    )


def lens_logits(parts: LensParts, states: Any) -> Any:
    """The final norm and LM head (and whatever the model applies after it) on residual states, as float32."""
    device = next(parts.norm.parameters()).device
    if device.type == "meta":  # offloaded: accelerate's hook brings the weights in; the input stays on CPU
        device = "cpu"
    logits = parts.head(parts.norm(states.to(device)))
    if parts.scale != 1.0:
        logits = logits * parts.scale
    if parts.softcap:
        logits = (logits / parts.softcap).tanh() * parts.softcap
    return logits.float()


@contextmanager
def _captured(parts: LensParts, *, attention_at: int | None):
    """Forward hooks: the input of the first layer, the output of every layer, and (with `attention_at`) one
    query position's attention weights per layer."""
    states: list[Any] = []
    weights: list[Any] = []

    def first_input(_module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        states.append(hidden[0].detach())

    def layer_output(_module, _args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        states.append(hidden[0].detach())

    def attention_output(_module, _args, output):
        probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if probs is None:
            raise LlmcliError("--attention: this model's attention returned no weights under eager attention")
        weights.append(probs[0, :, attention_at, : attention_at + 1].detach().float().cpu())

    handles = [parts.layers[0].register_forward_pre_hook(first_input, with_kwargs=True)]
    handles += [layer.register_forward_hook(layer_output) for layer in parts.layers]
    if attention_at is not None:
        modules = _attention_modules(parts)
        handles += [m.register_forward_hook(attention_output) for m in modules]
    try:
        yield states, weights
    finally:
        for handle in handles:
            handle.remove()


def _attention_modules(parts: LensParts) -> list[Any]:
    found = []
    for layer in parts.layers:
        inner = [m for m in layer.modules() if parts.attention_class and isinstance(m, parts.attention_class)]
        if len(inner) != 1:
            raise LlmcliError("--attention: the lens cannot find one attention module in each decoder layer")
        found.append(inner[0])
    return found


@contextmanager
def _eager(model: Any, wanted: bool):
    """Eager attention for this pass only: SDPA and flash kernels never form the weights."""
    inner = _unwrapped(model)
    before = getattr(inner.config, "_attn_implementation", None)
    if not wanted or before == "eager":
        yield
        return
    inner.set_attn_implementation("eager")
    try:
        yield
    finally:
        inner.set_attn_implementation(before)


def _forward(model: Any, ids: list[int], parts: LensParts, *, attention_at: int | None) -> tuple[list, list, Any]:
    import torch

    from llmcli.engine.load.devices import input_device
    from llmcli.engine.load.loader import last_logits_only

    tensor = torch.tensor([ids], device=input_device(model))
    # Only the last position's logits are needed (to check the lens against the model's own output).
    keep = last_logits_only(model, 1)
    with torch.inference_mode(), _eager(model, attention_at is not None):
        with _captured(parts, attention_at=attention_at) as (states, weights):
            logits = model(input_ids=tensor, use_cache=False, **keep).logits[0, -1].float()
    if len(states) != len(parts.layers) + 1:
        raise LlmcliError(f"the lens captured {len(states)} states for {len(parts.layers)} layers")
    return states, weights, logits


def _cells(logp: Any, final_logp: Any, targets: Any, top: int) -> list[Cell]:
    import torch

    probs = logp.exp()
    values, indexes = torch.topk(probs, top, dim=-1)
    target_logp = logp.gather(1, targets.unsqueeze(1))
    ranks = (logp > target_logp).sum(dim=-1) + 1
    kl = (final_logp.exp() * (final_logp - logp)).sum(dim=-1).clamp_min(0)
    return [
        Cell(
            top=list(zip(indexes[i].tolist(), values[i].tolist(), strict=True)),
            target_prob=float(target_logp[i].exp()),
            target_rank=int(ranks[i]),
            kl_to_final=float(kl[i]),
        )
        for i in range(logp.shape[0])
    ]


def lens_pass(
    model: Any, ids: list[int], positions: list[int], *, track: int | None, top: int, attention_at: int | None
) -> Pass:
    """The lens at `positions`: targets are `track` or, per position, the final layer's top token."""
    import torch

    parts = lens_parts(model)
    states, weights, model_logits = _forward(model, ids, parts, attention_at=attention_at)
    cells: list[list[Cell]] = [[] for _ in states]
    targets: list[int] = []
    with torch.inference_mode():
        last = torch.softmax(lens_logits(parts, states[-1][-1:])[0], dim=-1)
        check = float((torch.softmax(model_logits, dim=-1) - last.to(model_logits.device)).abs().max())
        for start in range(0, len(positions), CHUNK):
            chunk = torch.tensor(positions[start : start + CHUNK])
            final_logp = torch.log_softmax(lens_logits(parts, states[-1][chunk.to(states[-1].device)]), dim=-1)
            chosen = final_logp.argmax(dim=-1) if track is None else torch.full_like(chunk, track)
            targets += chosen.tolist()
            for layer, hidden in enumerate(states):
                logp = torch.log_softmax(lens_logits(parts, hidden[chunk.to(hidden.device)]), dim=-1)
                cells[layer] += _cells(logp, final_logp, chosen.to(logp.device), top)
    return Pass(positions=positions, targets=targets, cells=cells, final_check=check, attention=weights)


def lens_record(
    loaded: Any,
    prompt: str,
    *,
    chat: bool,
    system: str | None,
    view: Any,
    top: int,
) -> dict[str, Any]:
    """The lens record (docs/schemas/lens.json). `view` is reports.lens.LensView: which positions, which
    token to track, whether to read the attention."""
    from llmcli.analysis.probe import model_info
    from llmcli.engine.generate.calls import one_pass_ids
    from llmcli.reports import lens as report

    tokenizer = loaded.tokenizer
    ids = one_pass_ids(tokenizer, prompt, chat=chat, system=system)  # the command refused an empty prompt
    track = None
    if view.track is not None:
        track_ids = list(tokenizer(view.track, add_special_tokens=False)["input_ids"])
        track = report.single_token(view.track, track_ids, tokenizer.decode)
    position, grid = view.resolve(len(ids))
    positions = sorted({position, *grid, *(range(len(ids)) if track is not None and not grid else ())})
    found = lens_pass(
        loaded.model, ids, positions, track=track, top=top, attention_at=position if view.attention else None
    )
    if found.final_check > FINAL_TOLERANCE:
        raise LlmcliError(
            f"the lens's last layer differs from the model's output by {found.final_check:.2g}: this model applies "
            "something after its LM head that the lens does not reproduce"
        )
    from llmcli.reports import Decoder

    decode = Decoder(tokenizer.decode)
    return report.assemble(
        model=model_info(loaded),
        prompt=prompt,
        ids=ids,
        decode=decode,
        found=found,
        position=position,
        grid=grid,
        tracked=track is not None,
        attention=_attention(found.attention, position, ids, decode, top) if view.attention else None,
    )


FINAL_TOLERANCE = 1e-3  # the lens re-applies the model's own norm and head: it differs by rounding at most


def _attention(weights: list[Any], position: int, ids: list[int], decode: Any, top: int) -> dict[str, Any]:
    import torch

    layers = []
    for layer, matrix in enumerate(weights, 1):
        n = min(top, matrix.shape[-1])
        values, keys = torch.topk(matrix, n, dim=-1)
        heads = [
            {
                "head": h,
                "top": [
                    {"position": k, "token": decode(ids[k]), "weight": w}
                    for k, w in zip(keys[h].tolist(), values[h].tolist(), strict=True)
                ],
            }
            for h in range(matrix.shape[0])
        ]
        layers.append({"layer": layer, "first_token_share": float(matrix[:, 0].mean()), "heads": heads})
    return {"position": position, "implementation": "eager", "layers": layers}
