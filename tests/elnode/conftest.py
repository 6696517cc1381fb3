"""Fixtures of elnode's tests: start nodes of one test chain inside the per-test ``run``."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from elnode.chain import Chain, ChainSpec
from workbook.run import Run
from workbook.service import Service, http_health
from workbook.waiting import wait_until

GENESIS = 1_700_000_000
BLOCK_TIME = 0.2
CHAIN_ID = 1337
SEED = 7


def elnode_argv(name: str, *, block_time: float = BLOCK_TIME, seed: int = SEED, chain_id: int = CHAIN_ID,
                faults: bool = True, extra: tuple[str, ...] = ()) -> list[str]:
    """The command line of one node of the test chain (port 0)."""
    argv = ["elnode", "--listen", "127.0.0.1:0", "--name", name, "--chain-id", str(chain_id),
            "--block-time", str(block_time), "--seed", str(seed), "--genesis-time", str(GENESIS)]
    return [*argv, *(["--enable-fault-injection"] if faults else []), *extra]


@pytest.fixture
def start_node(run: Run) -> Callable[..., Service]:
    """``start_node(name="el1", **elnode_argv options)``: a started, healthy node of the run."""

    def start(name: str = "el1", **options: object) -> Service:
        return run.start(name, elnode_argv(name, **options), health=http_health("/health"))  # type: ignore[arg-type]

    return start


@pytest.fixture
def node(start_node: Callable[..., Service]) -> Service:
    """One node of the test chain with fault injection enabled."""
    return start_node()


async def until(predicate: Callable[[], bool], *, timeout: float = 10.0,  # noqa: ASYNC109
                what: str = "condition") -> None:
    """Wait until *predicate* holds (checked every 10 ms); fail the test after *timeout* seconds."""
    await wait_until(predicate, timeout, f"{what} to hold", poll=0.01, error=AssertionError)


def clock_head(block_time: float = BLOCK_TIME) -> int:
    """The head the test chain's clock says now (what an unfaulted node reports)."""
    return Chain(ChainSpec(CHAIN_ID, SEED, GENESIS, block_time)).clock_head(time.time())
