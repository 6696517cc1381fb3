"""The deterministic chain: every block, transaction and log is a pure function of the chain parameters.

Two nodes built with the same (chain id, seed, genesis time, block time) compute the same head number
and the same block hashes at the same instant, whenever they were started, so a primary and a backup
agree and a restarted node continues where the clock says. Hashes are SHA3-256 (a stand-in for
keccak: deterministic 32 bytes, not Ethereum's real RLP/keccak encoding).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

ZERO_HASH = "0x" + "00" * 32
EMPTY_UNCLES_HASH = "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347"
EMPTY_TRIE_ROOT = "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421"
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
APPROVAL_TOPIC = "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925"
EVENT_TOPICS = (TRANSFER_TOPIC, APPROVAL_TOPIC)
GAS_LIMIT = 30_000_000
GWEI = 10**9
N_CONTRACTS = 3
N_ACCOUNTS = 5
BLOOM_BYTES = 256


def _hex(value: int) -> str:
    return hex(value)


def _bloom_add(bloom: bytearray, item: bytes) -> None:
    """Set the three bloom bits of *item* the way Ethereum does (with SHA3-256 in place of keccak)."""
    digest = hashlib.sha3_256(item).digest()
    for i in (0, 2, 4):
        bit = ((digest[i] << 8) | digest[i + 1]) & 2047
        bloom[BLOOM_BYTES - 1 - bit // 8] |= 1 << (bit % 8)


@dataclass(frozen=True)
class ChainSpec:
    """What identifies a chain: nodes with equal specs serve identical blocks."""

    chain_id: int
    seed: int
    genesis_time: float
    block_time: float

    def __post_init__(self) -> None:
        if self.block_time <= 0:
            raise ValueError("block time must be positive")
        if self.chain_id <= 0:
            raise ValueError("chain id must be positive")


class Chain:
    """Blocks, transactions and logs of one deterministic chain, computed on demand and cached."""

    def __init__(self, spec: ChainSpec) -> None:
        self.spec = spec
        self._prefix = f"elnode/{spec.chain_id}/{spec.seed}/{spec.genesis_time!r}/{spec.block_time!r}/"
        self.contracts = tuple(self._address("contract", i) for i in range(N_CONTRACTS))
        self.accounts = tuple(self._address("account", i) for i in range(N_ACCOUNTS))
        self.miner = self._address("miner", 0)
        self.block = lru_cache(maxsize=4096)(self._build_block)
        self._numbers: dict[str, int] = {}

    # -- derivation ---------------------------------------------------------------------------------------

    def _digest(self, *parts: object) -> bytes:
        return hashlib.sha3_256((self._prefix + "/".join(map(str, parts))).encode()).digest()

    def _hash(self, *parts: object) -> str:
        return "0x" + self._digest(*parts).hex()

    def _address(self, kind: str, index: int) -> str:
        return "0x" + self._digest("address", kind, index)[-20:].hex()

    # -- time ---------------------------------------------------------------------------------------------

    def clock_head(self, now: float) -> int:
        """The head number the clock says at *now* (0 before genesis)."""
        return max(0, math.floor((now - self.spec.genesis_time) / self.spec.block_time))

    def block_start(self, number: int) -> float:
        """The instant block *number* becomes the head."""
        return self.spec.genesis_time + number * self.spec.block_time

    # -- content ------------------------------------------------------------------------------------------

    def block_hash(self, number: int) -> str:
        if number < 0:
            return ZERO_HASH
        value = self._hash("block", number)
        self._numbers[value] = number
        return value

    def base_fee(self, number: int) -> int:
        return 7 * GWEI + self._digest("basefee", number)[0] * GWEI // 64

    def transaction_count(self, number: int) -> int:
        """1 to 3 transactions per block (genesis has none), so every filter sees steady traffic."""
        return 0 if number == 0 else 1 + self._digest("txcount", number)[0] % 3

    def _build_block(self, number: int) -> dict[str, Any]:
        """Block *number* with full transaction objects and its logs (cached; callers must not mutate)."""
        block_hash = self.block_hash(number)
        base_fee = self.base_fee(number)
        txs: list[dict[str, Any]] = []
        logs: list[dict[str, Any]] = []
        bloom = bytearray(BLOOM_BYTES)
        for index in range(self.transaction_count(number)):
            d = self._digest("tx", number, index)
            sender = self.accounts[d[0] % N_ACCOUNTS]
            recipient = self.accounts[d[1] % N_ACCOUNTS]
            contract = self.contracts[d[2] % N_CONTRACTS]
            tx_hash = self._hash("txhash", number, index)
            tip = GWEI + d[3] * GWEI // 128
            txs.append({
                "blockHash": block_hash, "blockNumber": _hex(number), "from": sender, "to": contract,
                "gas": _hex(90_000), "gasPrice": _hex(base_fee + tip),
                "maxFeePerGas": _hex(2 * base_fee + tip),
                "maxPriorityFeePerGas": _hex(tip), "hash": tx_hash, "input": "0x" + d[4:8].hex(),
                "nonce": _hex(number * 4 + index), "transactionIndex": _hex(index), "value": "0x0",
                "type": "0x2", "accessList": [], "chainId": _hex(self.spec.chain_id), "v": "0x0",
                "yParity": "0x0", "r": self._hash("r", number, index), "s": self._hash("s", number, index),
            })
            topics = [EVENT_TOPICS[d[5] % 2], "0x" + "00" * 12 + sender[2:], "0x" + "00" * 12 + recipient[2:]]
            logs.append({
                "address": contract, "topics": topics, "data": "0x" + d[8:32].rjust(32, b"\0").hex(),
                "blockNumber": _hex(number), "blockHash": block_hash, "blockTimestamp": None,
                "transactionHash": tx_hash, "transactionIndex": _hex(index), "logIndex": _hex(index),
                "removed": False,
            })
            _bloom_add(bloom, bytes.fromhex(contract[2:]))
            for topic in topics:
                _bloom_add(bloom, bytes.fromhex(topic[2:]))
        timestamp = _hex(math.floor(self.block_start(number)))
        for log in logs:
            log["blockTimestamp"] = timestamp
        header = {
            "parentHash": self.block_hash(number - 1),
            "sha3Uncles": EMPTY_UNCLES_HASH,
            "miner": self.miner,
            "stateRoot": self._hash("state", number),
            "transactionsRoot": self._hash("txroot", number) if txs else EMPTY_TRIE_ROOT,
            "receiptsRoot": self._hash("receipts", number) if txs else EMPTY_TRIE_ROOT,
            "logsBloom": "0x" + bloom.hex(),
            "difficulty": "0x0",
            "number": _hex(number),
            "gasLimit": _hex(GAS_LIMIT),
            "gasUsed": _hex(sum(21_000 + 30_000 for _ in txs)),
            "timestamp": timestamp,
            "extraData": "0x" + b"elnode".hex(),
            "mixHash": self._hash("randao", number),
            "nonce": "0x0000000000000000",
            "baseFeePerGas": _hex(base_fee),
            "withdrawalsRoot": EMPTY_TRIE_ROOT,
            "blobGasUsed": "0x0",
            "excessBlobGas": "0x0",
            "parentBeaconBlockRoot": self._hash("beacon", number),
            "hash": block_hash,
        }
        return {"header": header, "transactions": tuple(txs), "logs": tuple(logs)}

    def header(self, number: int) -> dict[str, Any]:
        """The block header as geth's ``newHeads`` notification carries it (a fresh dict)."""
        return dict(self.block(number)["header"])

    def block_json(self, number: int, full_transactions: bool) -> dict[str, Any]:
        """The block as ``eth_getBlockByNumber`` returns it."""
        built = self.block(number)
        txs = built["transactions"]
        return {
            **built["header"],
            "size": _hex(600 + 120 * len(txs)),
            "transactions": [dict(t) for t in txs] if full_transactions else [t["hash"] for t in txs],
            "uncles": [],
            "withdrawals": [],
        }

    def number_of_hash(self, block_hash: str, head: int, window: int = 4096) -> int | None:
        """The number of the block with *block_hash* among the last *window* blocks up to *head*."""
        wanted = block_hash.lower()
        known = self._numbers.get(wanted)
        if known is not None:
            return known if known <= head else None
        for number in range(head, max(-1, head - window), -1):
            if self.block_hash(number) == wanted:
                return number
        return None

    def logs(self, number: int) -> tuple[dict[str, Any], ...]:
        return self.block(number)["logs"]

    def transaction_hashes(self, number: int) -> list[str]:
        return [t["hash"] for t in self.block(number)["transactions"]]
