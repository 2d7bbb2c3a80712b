"""Client-side gRPC load balancing on two real servers: the round_robin policy that SERClient opens
its channels with spreads one client's requests over every address of its target, as it does over
the pods behind a headless Service (dns:///ser-triton-headless:8001) on Kubernetes."""

import numpy as np
import pytest

from ser_triton.core.contract import SAMPLE_RATE
from ser_triton.client.library import SERClient
from tests.conftest import start_server
from tests.server_helpers import ensemble_successes, requests_served, utterance

pytestmark = pytest.mark.server

REQUESTS = 8


@pytest.fixture(scope="module")
def two_servers(tiny_repository):
    with start_server(tiny_repository) as first, \
            start_server(tiny_repository) as second:
        yield first, second


def classify_through(target: str, **options) -> list:
    with SERClient(target, **options) as client:  # one client, one channel
        return [client.classify(utterance(0.6, seed), sample_rate=SAMPLE_RATE) for seed in range(REQUESTS)]


def test_one_client_round_robins_over_both_servers_with_the_same_answers(two_servers):
    before = [ensemble_successes(s) for s in two_servers]
    target = "ipv4:" + ",".join(f"127.0.0.1:{s.grpc_port}" for s in two_servers)
    balanced = classify_through(target)
    served = requests_served(two_servers, before, REQUESTS)
    assert sum(served) == REQUESTS and min(served) > 0, served
    alone = classify_through(two_servers[0].grpc_url)
    for spread, single in zip(balanced, alone):
        assert (spread.label, spread.transcript) == (single.label, single.transcript)
        np.testing.assert_allclose(list(spread.probabilities.values()), list(single.probabilities.values()), atol=1e-5)


def test_without_round_robin_one_connection_takes_every_request(two_servers):
    """What a plain Kubernetes Service gives a gRPC client, and what the option above fixes."""
    before = [ensemble_successes(s) for s in two_servers]
    target = "ipv4:" + ",".join(f"127.0.0.1:{s.grpc_port}" for s in two_servers)
    classify_through(target, grpc_options={"grpc.lb_policy_name": "pick_first"})
    served = requests_served(two_servers, before, REQUESTS)
    assert sorted(served) == [0, REQUESTS], served
