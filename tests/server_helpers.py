"""Raw tritonclient calls for the server tests (independent of the project's client library)."""

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from client import contract

MODULES = {"grpc": grpcclient, "http": httpclient}


def connect(server, protocol: str):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    return MODULES[protocol].InferenceServerClient(url)


def infer(client, protocol: str, batch: np.ndarray):
    """[b, n] float32 -> (emotions, probabilities [b, 4], transcripts)."""
    module = MODULES[protocol]
    audio = module.InferInput(contract.AUDIO, list(batch.shape), "FP32")
    audio.set_data_from_numpy(batch)
    outputs = [module.InferRequestedOutput(n) for n in (contract.EMOTION, contract.PROBABILITIES, contract.TRANSCRIPT)]
    result = client.infer(contract.ENSEMBLE, [audio], outputs=outputs)
    emotions = [e.decode() for e in result.as_numpy(contract.EMOTION).reshape(-1)]
    transcripts = [t.decode() for t in result.as_numpy(contract.TRANSCRIPT).reshape(-1)]
    return emotions, result.as_numpy(contract.PROBABILITIES), transcripts


def utterance(seconds: float, seed: int) -> np.ndarray:
    """Speech-like test audio: a few harmonics under a syllable-rate envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(contract.SAMPLE_RATE * seconds)) / contract.SAMPLE_RATE
    pitch = 110 + 60 * rng.random()
    voice = sum(np.sin(2 * np.pi * pitch * k * t + rng.random() * 6) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * (3 + 2 * rng.random()) * t)
    return (0.2 * voice * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
