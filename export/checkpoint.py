"""Research checkpoints: load them safely and split them into encoder and head weights.

A checkpoint is the flat state_dict of the research EnhancedSERModel (`hubert.*`, `bert.*`,
`cmg.*`, `proj_bert.*`, `fc.*`), possibly wrapped as `{"model_state_dict": ...}` or saved from
DataParallel (`module.` prefixes). It is loaded with `weights_only=True`: no pickled code runs.
"""

from pathlib import Path

import torch

PARTS = {"hubert.": "acoustic", "bert.": "text", "cmg.": "head", "proj_bert.": "head", "fc.": "head"}
"""Key prefix -> the component whose weights it holds. Head keys keep their prefix."""

_WRAPPERS = ("model_state_dict", "state_dict")


class CheckpointError(ValueError):
    """The checkpoint does not match the model; the message names the offending keys."""


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"checkpoint '{path}' could not be read as a weights-only PyTorch file: {error}"
        ) from error
    return normalise_state_dict(state, source=str(path))


def normalise_state_dict(state, source: str = "checkpoint") -> dict:
    """Unwrap `{"model_state_dict": ...}` and strip DataParallel `module.` prefixes."""
    for wrapper in _WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source} is not a state_dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


def split_state_dict(state: dict) -> dict[str, dict]:
    """{"acoustic": HubertModel keys, "text": BertModel keys, "head": FusionHead keys}."""
    parts: dict[str, dict] = {"acoustic": {}, "text": {}, "head": {}}
    unknown = []
    for key, value in state.items():
        prefix = next((p for p in PARTS if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
        elif PARTS[prefix] == "head":
            parts["head"][key] = value
        else:
            parts[PARTS[prefix]][key[len(prefix):]] = value
    if unknown:
        raise CheckpointError(
            f"unexpected keys (not under {', '.join(PARTS)}): {_listing(unknown)}"
        )
    return parts


def _listing(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_matches(module: torch.nn.Module, weights: dict, part: str, prefix: str = "") -> None:
    """Raise naming every missing, unexpected or mis-shaped key of one component."""
    expected = module.state_dict()
    optional = {k for k in expected if k.endswith("position_ids") or k == "masked_spec_embed"}
    missing = [prefix + k for k in expected if k not in weights and k not in optional]
    unexpected = [prefix + k for k in weights if k not in expected]
    misshaped = [
        f"{prefix}{k} (checkpoint {tuple(v.shape)}, model {tuple(expected[k].shape)})"
        for k, v in weights.items() if k in expected and v.shape != expected[k].shape
    ]
    problems = [
        f"{label}: {_listing(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
        if keys
    ]
    if problems:
        raise CheckpointError(f"checkpoint does not fit the {part} model: " + "; ".join(problems))


def apply_checkpoint(components, state: dict) -> None:
    parts = split_state_dict(state)
    targets = {"acoustic": (components.acoustic, "hubert."), "text": (components.text, "bert."),
               "head": (components.head, "")}
    for part, (module, prefix) in targets.items():
        if not parts[part]:
            raise CheckpointError(f"checkpoint has no {part} weights (no '{prefix or 'cmg.'}' keys)")
        check_matches(module, parts[part], part, prefix)
    for part, (module, _) in targets.items():
        module.load_state_dict(parts[part], strict=False)
