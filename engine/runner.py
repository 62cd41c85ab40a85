"""Runs the model over KV memory that follows the tree (engine/kv.py).

Two calls. `prompt` evaluates a prompt once, in chunks, and keeps its KV for every tree that starts
with it. `step` evaluates any number of rows in one forward pass, from any number of prompts and trees:
a row extends a node's path by one token (a tree level), or a prompt by a whole path (a node taken over
without its ancestors' KV). No row carries a copy of its prompt. Each row's distribution is the one its
own sampler settings leave (engine/sampling.py), and only the top-k of it leaves the device. A third,
`each_position`, evaluates one sequence in chunks and hands the logits of every position to a reduction
on the device (scoring a text, engine/score.py).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from transformers import PreTrainedModel

from tokentree.engine.kv import (
    PREFILL_CHUNK,
    KVPool,
    NodeKV,
    NodeRows,
    PromptChunk,
    PromptKV,
    tree_attention_on,
)
from tokentree.engine.sampling import SamplerSettings, processed_rows
from tokentree.engine.scheduler import Distribution

IDENTITY = SamplerSettings()

Reduced = TypeVar("Reduced")
# `each_position`'s logits per chunk, at most (positions x vocabulary): 128 MiB of fp32, e.g. 131 positions
# of a 256,000-token vocabulary.
POSITION_LOGITS_ELEMENTS = 32 * 2**20


@dataclass(frozen=True)
class Row:
    """One row of a step: `token_ids` appended to `parent`'s path, or to the prompt alone (no parent);
    its distribution is the one `sampler` leaves."""

    prompt: PromptKV
    parent: NodeKV | None
    token_ids: Sequence[int]
    sampler: SamplerSettings = field(default=IDENTITY)


class ModelRunner:
    """Turns prompts and tree paths into next-token distributions, `top_k` tokens each by default."""

    def __init__(self, model: PreTrainedModel, top_k: int) -> None:
        self.model = model
        self.device = model.device
        self.vocab_size = int(model.config.get_text_config().vocab_size)
        self.top_k = min(top_k, self.vocab_size)
        self.pool = KVPool(self.device)
        self._prompts: weakref.WeakValueDictionary[tuple[int, ...], PromptKV] = weakref.WeakValueDictionary()
        self.forward_passes = 0

    @torch.inference_mode()
    def prompt(self, token_ids: Sequence[int]) -> PromptKV:
        """The prompt's KV, evaluated once while any tree holds it; its `last_logits` give the root's
        distribution."""
        key = tuple(token_ids)
        if not key:
            raise ValueError("a prompt needs at least one token")
        found = self._prompts.get(key)
        if found is not None:
            return found
        prompt = PromptKV(key)
        for start in range(0, len(key), PREFILL_CHUNK):
            chunk = key[start : start + PREFILL_CHUNK]
            input_ids = torch.tensor([chunk], device=self.device)  # [1, C]
            positions = torch.arange(start, start + len(chunk), device=self.device)[None, :]
            prompt.last_logits = self._forward(input_ids, positions, PromptChunk(prompt, start))[0]
        self._prompts[key] = prompt
        return prompt

    def distribution(self, prompt: PromptKV, top_k: int | None = None,
                     sampler: SamplerSettings = IDENTITY) -> Distribution:
        """The distribution of the token after the prompt (a root's)."""
        assert prompt.last_logits is not None, "the prompt is evaluated by `prompt` first"
        return reduce_logits(prompt.last_logits[None, :], self._k(top_k), [sampler])[0]

    @torch.inference_mode()
    def step(self, rows: Sequence[Row], top_k: int | None = None) -> tuple[list[Distribution], list[NodeKV]]:
        """Evaluate every row; their distributions and the new nodes' KV handles, in row order.

        Rows of equal length run in one forward pass (all of a tree level's rows have length 1)."""
        by_length: dict[int, list[int]] = {}
        for index, row in enumerate(rows):
            by_length.setdefault(len(row.token_ids), []).append(index)
        dists: list[Distribution | None] = [None] * len(rows)
        nodes: list[NodeKV | None] = [None] * len(rows)
        for length, indices in by_length.items():
            group = [rows[i] for i in indices]
            group_dists, group_nodes = self._step_equal(group, length, self._k(top_k))
            for i, dist, node in zip(indices, group_dists, group_nodes, strict=True):
                dists[i], nodes[i] = dist, node
        return dists, nodes  # type: ignore[return-value]  # every index was filled

    def _step_equal(self, rows: Sequence[Row], length: int, top_k: int) -> tuple[list[Distribution],
                                                                                   list[NodeKV]]:
        slots = self.pool.allocate(len(rows) * length)
        nodes = [NodeKV(row.prompt, row.parent, slots[i * length : (i + 1) * length], self.pool)
                 for i, row in enumerate(rows)]
        ancestors = [0 if row.parent is None else len(row.parent) for row in rows]
        paths = torch.nn.utils.rnn.pad_sequence([n.path for n in nodes], batch_first=True)  # [B, S]
        layout = NodeRows(
            prompts=[row.prompt for row in rows],
            ancestors=ancestors,
            slots=torch.tensor(slots, device=self.device).view(len(rows), length),  # [B, L]
            paths=paths,
            pool=self.pool,
            tokens=length,
        )
        input_ids = torch.tensor([list(row.token_ids) for row in rows], device=self.device)  # [B, L]
        first = torch.tensor([len(row.prompt) + a for row, a in zip(rows, ancestors, strict=True)],
                             device=self.device)
        positions = first[:, None] + torch.arange(length, device=self.device)[None, :]  # [B, L]
        logits = self._forward(input_ids, positions, layout)
        return reduce_logits(logits, top_k, [row.sampler for row in rows]), nodes

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                 layout: PromptChunk | NodeRows) -> torch.Tensor:
        """[B, L] tokens at [B, L] positions -> [B, V] logits of each row's last token (fp32)."""
        return self._last_logits(input_ids, positions, layout, 1)[:, -1, :]

    def _last_logits(self, input_ids: torch.Tensor, positions: torch.Tensor, layout: PromptChunk | NodeRows,
                     keep: int) -> torch.Tensor:
        """[B, L] tokens at [B, L] positions -> [B, keep, V] logits of each row's last `keep` tokens
        (fp32)."""
        self.forward_passes += 1
        with tree_attention_on(self.model):
            out = self.model(input_ids=input_ids, position_ids=positions, use_cache=False,
                             logits_to_keep=keep, tree_batch=layout)
        return out.logits[:, -keep:, :].float()  # softmax in fp32 whatever the model's dtype

    def _k(self, top_k: int | None) -> int:
        return self.top_k if top_k is None else min(top_k, self.vocab_size)

    def memory_bytes(self) -> int:
        """KV memory held now: the pool (all slots, used or not) and the live prompts."""
        return self.pool.bytes() + sum(p.bytes() for p in self._prompts.values())

    @torch.inference_mode()
    def each_position(self, token_ids: Sequence[int], first: int,
                      reduce: Callable[[int, torch.Tensor], Reduced],
                      chunk: int | None = None) -> list[Reduced]:
        """Evaluate `token_ids` once, in chunks as `prompt` does (into KV of its own, held for this call
        only), and hand `reduce` the logits of every position from `first` on, one chunk at a time: the
        chunk's first kept position and its [n, V] fp32 logits (row i: the distribution of the token
        after position + i). What `reduce` returns, in chunk order. At most one chunk's logits exist at
        once: `chunk` positions, by default as many as keep [chunk, V] within `POSITION_LOGITS_ELEMENTS`."""
        if not 0 <= first < len(token_ids):
            raise ValueError(f"first must be a position of the {len(token_ids)} tokens, got {first}")
        if chunk is None:
            chunk = max(1, min(PREFILL_CHUNK, POSITION_LOGITS_ELEMENTS // self.vocab_size))
        sequence = PromptKV(tuple(token_ids))
        reduced = []
        for start in range(0, len(token_ids), chunk):
            end = min(start + chunk, len(token_ids))
            input_ids = torch.tensor([token_ids[start:end]], device=self.device)  # [1, C]
            positions = torch.arange(start, end, device=self.device)[None, :]
            kept = end - max(start, first)  # the kept positions end the chunk
            logits = self._last_logits(input_ids, positions, PromptChunk(sequence, start), max(1, kept))[0]
            if kept > 0:
                reduced.append(reduce(end - kept, logits))  # logits [kept, V]
        return reduced


def reduce_logits(logits: torch.Tensor, top_k: int,
                  samplers: Sequence[SamplerSettings] | None = None) -> list[Distribution]:
    """[B, V] logits -> B distributions of their top_k tokens, with one transfer to the host.

    Row b's distribution is the one `samplers[b]` leaves (all rows the model's own when None): its top_k
    tokens, their processed and raw (the model's own) probabilities, and the processed distribution's
    entropy, the distribution the rule branches on."""
    raw = torch.log_softmax(logits, dim=-1)  # [B, V]
    logprobs = raw if samplers is None else processed_rows(logits, raw, samplers)  # [B, V]
    probs = logprobs.exp()
    entropy = torch.special.entr(probs).sum(dim=-1)  # [B]; entr(0) = 0, no nan from 0 * -inf
    top_probs, top_ids = probs.topk(top_k, dim=-1)  # [B, k]
    top_logprobs = logprobs.gather(-1, top_ids)
    top_raw = raw.gather(-1, top_ids)
    # One [B, 5k + 1] float64 block (token ids are exact in float64), so one transfer to the host.
    block = torch.cat([top_ids.double(), top_probs.double(), top_logprobs.double(), top_raw.exp().double(),
                       top_raw.double(), entropy.double()[:, None]], dim=1).cpu().tolist()
    k = top_ids.shape[1]
    return [
        Distribution(token_ids=[int(t) for t in row[:k]], probs=row[k : 2 * k], logprobs=row[2 * k : 3 * k],
                     raw_probs=row[3 * k : 4 * k], raw_logprobs=row[4 * k : 5 * k], entropy=row[5 * k])
        for row in block
    ]
