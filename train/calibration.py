"""Calibrated probabilities within the research format: one temperature, folded into `fc`.

Temperature scaling (Guo et al. 2017) fits one scalar T > 0 on validation logits by minimising the
negative log-likelihood of softmax(logits / T). The head's last layer is the linear `fc` that makes
the logits, so logits / T = (W / T) x + b / T: dividing `fc.weight` and `fc.bias` by T calibrates
the checkpoint, the served head and the research class alike, keeps the format and every other
weight, and changes no label (argmax is the same for any T > 0). Calibration is reported as the
expected calibration error (ECE) over 15 equal-width confidence bins.
"""

import numpy as np
import torch

ECE_BINS = 15


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T) (LBFGS over log T, from T = 1)."""
    logits_t, labels_t = torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(labels)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def nll():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits_t / log_t.exp(), labels_t)
        loss.backward()
        return loss

    optimizer.step(nll)
    return float(log_t.detach().exp())


def fold_temperature(state: dict, temperature: float) -> dict:
    """A research state_dict whose `fc` gives logits / temperature (a copy; the rest shared)."""
    folded = dict(state)
    folded["fc.weight"] = state["fc.weight"] / temperature
    folded["fc.bias"] = state["fc.bias"] / temperature
    return folded


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over equal-width confidence bins of |accuracy - mean confidence|, weighted by the bin's share."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def nll(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, None)).mean())
