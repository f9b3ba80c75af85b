"""Which parameters belong to which embodiment (stems, heads, modulations) and which to the trunk."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn


class TransferError(RuntimeError):
    """Pre-trained weights do not fit the post-training model; the message lists the keys."""


def embodiment_prefixes(model: nn.Module) -> dict[str, str]:
    """``{"stems.franka.": "franka", ...}``: every per-embodiment module's parameter prefix.

    A per-embodiment module is an entry of an ``nn.ModuleDict`` keyed by exactly the
    config's embodiment names (STYLE §3: stems, heads and modulations are built that way).
    """
    names = set(model.config.embodiment_names)
    out = {}
    for path, m in model.named_modules():
        if isinstance(m, nn.ModuleDict) and set(m.keys()) == names:
            for name in names:
                out[f"{path}.{name}." if path else f"{name}."] = name
    if not out:
        raise TransferError(f"{type(model).__name__} has no ModuleDict keyed by its embodiments {sorted(names)}")
    return out


def owner(key: str, prefixes: Mapping[str, str]) -> str | None:
    """The embodiment that owns a state-dict key, or ``None`` for a trunk key."""
    for prefix, name in prefixes.items():
        if key.startswith(prefix):
            return name
    return None


def embodiment_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Each embodiment's own parameters (its entries of the per-embodiment ModuleDicts)."""
    prefixes = embodiment_prefixes(model)
    out: dict[str, list[nn.Parameter]] = {n: [] for n in model.config.embodiment_names}
    for key, p in model.named_parameters():
        emb = owner(key, prefixes)
        if emb is not None:
            out[emb].append(p)
    return out
