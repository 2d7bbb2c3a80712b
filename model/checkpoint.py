"""Research checkpoints: load them safely and split them into each network's weights.

A checkpoint is the flat state_dict of the research EnhancedSERModel (`hubert.*`, `bert.*`,
`cmg.*`, `proj_bert.*`, `fc.*`; which network each prefix belongs to is in core.glossary),
possibly wrapped as `{"model_state_dict": ...}` or saved from DataParallel (`module.` prefixes).
It is loaded with `weights_only=True`: no pickled code runs, and memory-mapped (zip files, what
`torch.save` writes): a network's weights are read when that network is built, not before.
"""

import zipfile
from pathlib import Path

import torch

from ser_triton.model.errors import CheckpointError
from ser_triton.core.glossary import NETWORKS

TRAINED = tuple(network for network in NETWORKS if network.checkpoint_prefixes)
"""The networks a research checkpoint holds (wav2vec2, the ASR, is not fine-tuned there)."""

_WRAPPERS = ("model_state_dict", "state_dict")


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
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
    """Network name -> that network's keys (as its module names them)."""
    parts: dict[str, dict] = {network.name: {} for network in TRAINED}
    owners = {prefix: network for network in TRAINED for prefix in network.checkpoint_prefixes}
    unknown = []
    for key, value in state.items():
        prefix = next((p for p in owners if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
            continue
        network = owners[prefix]
        parts[network.name][key if network.keeps_prefix else key[len(prefix):]] = value
    if unknown:
        raise CheckpointError(
            f"unexpected keys (not under {', '.join(owners)}): {_listing(unknown)}"
        )
    return parts


def _listing(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_matches(module: torch.nn.Module, weights: dict, network: str, prefix: str = "") -> None:
    """Raise naming every missing, unexpected or mis-shaped key of one network."""
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
        raise CheckpointError(f"checkpoint does not fit the {network} network: " + "; ".join(problems))


def check_checkpoint(modules: dict[str, torch.nn.Module], state: dict) -> dict[str, dict]:
    """Each trained network's part of the checkpoint, after checking every part against its module
    (network name -> module; shapes are all it reads, so modules on the meta device do)."""
    parts = split_state_dict(state)
    for network in TRAINED:
        shown_prefix = "" if network.keeps_prefix else network.checkpoint_prefixes[0]
        if not parts[network.name]:
            raise CheckpointError(f"checkpoint has no {network.name} weights (no "
                                  f"{' / '.join(repr(p) for p in network.checkpoint_prefixes)} keys)")
        check_matches(modules[network.name], parts[network.name], network.name, shown_prefix)
    return parts


def load_network_weights(module: torch.nn.Module, name: str, state: dict) -> None:
    """Load one network's part of a checkpoint (checked by check_checkpoint) into its module."""
    part = split_state_dict(state).get(name)
    if part:
        module.load_state_dict(part, strict=False)

