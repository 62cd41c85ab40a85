"""KV memory that follows the tree, and the attention that reads it.

The invariant: a row (a node being evaluated) attends to exactly the tokens of its own prefix, in order,
and nothing of that prefix is copied for it. A prefix has two parts:

- its prompt (`PromptKV`): keys and values held once per distinct prompt, one [kv_heads, P, head_dim]
  tensor per layer, shared by every node of every tree that starts from those tokens;
- its path below the prompt (`NodeKV.path`): one slot per token in a pool per layer (`KVPool`). A node's
  path is its parent's path plus the slot of its own token, so siblings share their ancestors' slots.

Attention is cascaded (as Hydragen and FlashInfer's cascade attention do): the rows of one prompt score
that prompt's keys in one matmul, and each row gathers only its own path's slots. Both parts' scores are
softmaxed together, so the result is the plain attention over the whole prefix. Memory is the prompts
plus one slot per live node: a slot goes back to the pool when the last path through it is dropped
(`NodeKV` objects hold their parent, and release their own slot when they are freed).

The model's own attention layers call `tree_attention` (registered with transformers' `AttentionInterface`)
with the new tokens' queries, keys and values, rotary positions applied; the layout of the batch
(`PromptChunk` or `NodeRows`) comes through the model's keyword arguments as `tree_batch`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface

ATTENTION_NAME = "tokentree_tree"
PREFILL_CHUNK = 512  # prompt tokens evaluated per forward pass: bounds the [chunk, prompt] score matrix


class KVPool:
    """One slot per evaluated path token, per layer: keys and values [capacity, kv_heads, head_dim].

    Layers are created on their first write (their shapes come from the model), and grow together by
    doubling. Slots are handed out and taken back by number, under a lock: a worker's unit threads drop
    their trees (and so release slots) while its model thread allocates.
    """

    def __init__(self, device: torch.device, capacity: int = 1024) -> None:
        self.device = device
        self.capacity = capacity
        self._lock = threading.Lock()
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self._free = list(range(capacity - 1, -1, -1))  # a stack: low slots first

    @property
    def in_use(self) -> int:
        return self.capacity - len(self._free)

    def bytes(self) -> int:
        return sum(t.nbytes for t in (*self.keys.values(), *self.values.values()))

    def allocate(self, count: int) -> list[int]:
        with self._lock:
            if count > len(self._free):
                self._grow(max(2 * self.capacity, self.in_use + count))
            slots = self._free[-count:][::-1]
            del self._free[-count:]
            return slots

    def release(self, slots: Sequence[int]) -> None:
        with self._lock:
            self._free.extend(slots)

    def _grow(self, capacity: int) -> None:
        extra = capacity - self.capacity
        for store in (self.keys, self.values):
            for layer, old in store.items():
                store[layer] = torch.cat([old, old.new_zeros((extra, *old.shape[1:]))])
        self._free = list(range(capacity - 1, self.capacity - 1, -1)) + self._free
        self.capacity = capacity

    def write(self, layer: int, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """keys, values: [n, kv_heads, head_dim] for the n `slots`."""
        if layer not in self.keys:
            shape = (self.capacity, *keys.shape[1:])
            # Zeros, not empty: padding reads slot 0, and its weight 0 times a NaN would still be NaN.
            self.keys[layer] = keys.new_zeros(shape)
            self.values[layer] = values.new_zeros(shape)
        self.keys[layer].index_copy_(0, slots, keys)
        self.values[layer].index_copy_(0, slots, values)


class PromptKV:
    """A prompt's keys and values, computed once, with the logits of the token after it."""

    def __init__(self, token_ids: tuple[int, ...]) -> None:
        self.token_ids = token_ids
        self.keys: dict[int, torch.Tensor] = {}  # layer -> [kv_heads, P, head_dim]
        self.values: dict[int, torch.Tensor] = {}
        self.last_logits: torch.Tensor | None = None  # [V] fp32: the next token's, once prefilled

    def __len__(self) -> int:
        return len(self.token_ids)

    def bytes(self) -> int:
        return sum(t.nbytes for t in (*self.keys.values(), *self.values.values()))


class NodeKV:
    """A node's place in KV memory: its prompt and its path of pool slots below it, its own tokens last.

    It holds its parent, so the ancestors' slots live as long as any descendant does; its own slots go
    back to the pool when it is freed.
    """

    __slots__ = ("__weakref__", "_own", "_pool", "parent", "path", "prompt")

    def __init__(self, prompt: PromptKV, parent: NodeKV | None, own: list[int], pool: KVPool) -> None:
        self.prompt = prompt
        self.parent = parent
        own_slots = torch.tensor(own, dtype=torch.long, device=pool.device)
        self.path: torch.Tensor = own_slots if parent is None else torch.cat([parent.path, own_slots])
        self._own = own
        self._pool = pool

    def __len__(self) -> int:
        return int(self.path.shape[0])

    def __del__(self) -> None:
        self._pool.release(self._own)


# -- the layout of one forward pass ------------------------------------------------------------------


@dataclass
class PromptChunk:
    """Prefill: tokens [start, start + C) of one prompt, attending causally to the prompt up to them."""

    prompt: PromptKV
    start: int

    def attend(self, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               scaling: float, window: int | None, softcap: float | None) -> torch.Tensor:
        # query [1, H, C, D]; key, value [1, Hkv, C, D]
        prompt, start = self.prompt, self.start
        chunk = query.shape[2]
        end = start + chunk
        if layer not in prompt.keys:
            prompt.keys[layer] = key.new_empty((key.shape[1], len(prompt), key.shape[3]))
            prompt.values[layer] = value.new_empty((value.shape[1], len(prompt), value.shape[3]))
        prompt.keys[layer][:, start:end] = key[0]
        prompt.values[layer][:, start:end] = value[0]
        first = 0 if window is None else max(0, start - window + 1)  # older keys are out of every window
        keys, values = prompt.keys[layer][:, first:end], prompt.values[layer][:, first:end]  # [Hkv, K, D]
        kv_heads = keys.shape[0]
        groups = query.shape[1] // kv_heads
        q = _prescaled(query[0].reshape(kv_heads, groups * chunk, query.shape[3]), scaling, softcap)
        q_pos = torch.arange(start, end, device=query.device)[:, None]
        k_pos = torch.arange(first, end, device=query.device)[None, :]
        allowed = k_pos <= q_pos
        if window is not None:
            allowed &= q_pos - k_pos < window
        allowed = allowed.repeat(groups, 1)  # [G*C, K]; query row g*C + i is position start + i
        scores = _scores(q @ keys.transpose(1, 2), softcap).masked_fill(~allowed, float("-inf"))
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype)
        out = weights @ values  # [Hkv, G*C, D]
        return out.reshape(1, kv_heads * groups, chunk, -1).transpose(1, 2)


@dataclass
class NodeRows:
    """A step: B rows of L new tokens each (L = 1 for a tree level; L = depth for nodes taken over
    without their parents' slots). Row b's path is its A_b ancestors' slots, then its L new slots."""

    prompts: list[PromptKV]
    ancestors: list[int]  # A_b: path tokens already in the pool
    slots: torch.Tensor  # [B, L] the new tokens' slots
    paths: torch.Tensor  # [B, S] each row's whole path (ancestors + new), padded with slot 0
    pool: KVPool
    tokens: int  # L
    groups: list[tuple[PromptKV, torch.Tensor]] = field(default_factory=list)  # prompt -> its rows
    _masks: dict[int | None, tuple[torch.Tensor, list[tuple[int, torch.Tensor | None]]]] = field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        by_prompt: dict[int, tuple[PromptKV, list[int]]] = {}
        for row, prompt in enumerate(self.prompts):
            by_prompt.setdefault(id(prompt), (prompt, []))[1].append(row)
        device = self.paths.device
        self.groups = [(p, torch.tensor(rows, device=device)) for p, rows in by_prompt.values()]

    def _masks_for(self, window: int | None) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor | None]]]:
        """Which keys each query may see, built once per batch and window size and shared by the layers:
        suffix [B, L, S]; per prompt group, the first prompt position any of its rows can see (a sliding
        window leaves older ones out of the matmul altogether) and a mask [n, L, P - first] (None: all)."""
        if window in self._masks:
            return self._masks[window]
        device = self.paths.device
        ancestors = torch.tensor(self.ancestors, device=device)[:, None, None]  # [B, 1, 1]
        q_index = ancestors + torch.arange(self.tokens, device=device)[None, :, None]  # [B, L, 1]
        k_index = torch.arange(self.paths.shape[1], device=device)[None, None, :]  # [1, 1, S]
        suffix = k_index <= q_index
        if window is not None:
            suffix &= q_index - k_index < window
        prefix: list[tuple[int, torch.Tensor | None]] = []
        for prompt, rows in self.groups:
            length = len(prompt)
            if window is None:
                prefix.append((0, None))
                continue
            # Query position P + q sees prompt position p when P + q - p < window.
            rows_q = q_index[rows]
            first = max(0, min(length, length + int(rows_q.min()) - window + 1))
            if length + int(rows_q.max()) - first < window:
                prefix.append((first, None))
                continue
            p_pos = torch.arange(first, length, device=device)[None, None, :]
            prefix.append((first, length + rows_q - p_pos < window))
        self._masks[window] = (suffix, prefix)
        return self._masks[window]

    def attend(self, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               scaling: float, window: int | None, softcap: float | None) -> torch.Tensor:
        # query [B, H, L, D]; key, value [B, Hkv, L, D]
        batch, heads, length, dim = query.shape
        kv_heads = key.shape[1]
        groups = heads // kv_heads
        rows_per_kv = groups * length  # query rows per kv head: row g*L + i is query i of head g
        pool = self.pool
        pool.write(layer, self.slots.reshape(-1), key.transpose(1, 2).reshape(-1, kv_heads, dim),
                   value.transpose(1, 2).reshape(-1, kv_heads, dim))
        suffix_mask, prefix_masks = self._masks_for(window)
        q = _prescaled(query.reshape(batch, kv_heads, rows_per_kv, dim), scaling, softcap)

        # The path part: each row's own slots, gathered. [B, Hkv, G*L, S]
        s_keys = pool.keys[layer][self.paths].permute(0, 2, 3, 1)  # [B, Hkv, D, S]
        s_values = pool.values[layer][self.paths].transpose(1, 2)  # [B, Hkv, S, D]
        s_scores = _scores(q @ s_keys, softcap)
        s_scores.masked_fill_(~_per_group(suffix_mask, groups)[:, None], float("-inf"))

        # The prompt part: all rows of a prompt against its keys in one matmul, kept as a running
        # softmax (max, sum, weighted values) per query row, so no [rows, P] tensor is ever copied.
        p_max = q.new_empty((batch, kv_heads, rows_per_kv, 1), dtype=torch.float32)
        p_sum = torch.empty_like(p_max)
        p_out = q.new_empty((batch, kv_heads, rows_per_kv, dim), dtype=torch.float32)
        for (prompt, rows), (first, prefix_mask) in zip(self.groups, prefix_masks, strict=True):
            n = rows.shape[0]
            whole = n == batch
            p_keys, p_values = prompt.keys[layer][:, first:], prompt.values[layer][:, first:]  # [Hkv, P', D]
            if p_keys.shape[1] == 0:  # every row's window has left the prompt behind
                p_max[rows], p_sum[rows], p_out[rows] = torch.finfo(torch.float32).min, 0.0, 0.0
                continue
            q_rows = q if whole else q[rows]
            flat = q_rows.transpose(0, 1).reshape(kv_heads, n * rows_per_kv, dim)
            scores = _scores(flat @ p_keys.transpose(1, 2), softcap).float()  # [Hkv, n*G*L, P]
            if prefix_mask is not None:
                scores.view(kv_heads, n, rows_per_kv, -1).masked_fill_(
                    ~_per_group(prefix_mask, groups)[None], float("-inf"))
            # A row whose window has left the prompt behind sees none of it: a finite max keeps its
            # weights at exp(-inf) = 0 rather than nan.
            most = scores.amax(dim=-1, keepdim=True).clamp_(min=torch.finfo(torch.float32).min)
            weights = scores.sub_(most).exp_()
            total = weights.sum(dim=-1, keepdim=True)
            weighted = (weights.to(p_values.dtype) @ p_values).float()  # [Hkv, n*G*L, D]

            def per_row(t: torch.Tensor, n: int = n) -> torch.Tensor:
                return t.view(kv_heads, n, rows_per_kv, -1).transpose(0, 1)  # -> [n, Hkv, G*L, .]

            if whole:
                p_max, p_sum, p_out = per_row(most), per_row(total), per_row(weighted)
            else:
                p_max[rows], p_sum[rows], p_out[rows] = per_row(most), per_row(total), per_row(weighted)

        # Merge the two softmaxes: one softmax over prompt + path.
        s_scores = s_scores.float()
        most = torch.maximum(p_max, s_scores.amax(dim=-1, keepdim=True))
        p_scale = (p_max - most).exp_()
        s_weights = s_scores.sub_(most).exp_()
        total = p_sum * p_scale + s_weights.sum(dim=-1, keepdim=True)
        out = p_out * p_scale + (s_weights.to(s_values.dtype) @ s_values).float()
        out = out.div_(total).to(query.dtype)
        return out.reshape(batch, heads, length, dim).transpose(1, 2)


def _prescaled(query: torch.Tensor, scaling: float, softcap: float | None) -> torch.Tensor:
    """The queries times the score scale (divided by the soft cap, where there is one): scaling the few
    queries saves a pass over the many scores."""
    return query * (scaling if softcap is None else scaling / softcap)


def _scores(raw: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """Attention logits from prescaled queries, as the models compute them (Gemma-2 soft-caps them:
    softcap * tanh(scores / softcap)), in place on `raw`."""
    return raw if softcap is None else raw.tanh_().mul_(softcap)


def _per_group(mask: torch.Tensor, groups: int) -> torch.Tensor:
    """[n, L, K] -> [n, G*L, K]: the same mask for each query head of a kv head (row g*L + i is query i)."""
    return mask.repeat(1, groups, 1) if groups > 1 else mask


# -- wiring into transformers -------------------------------------------------------------------------


def tree_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: Any, *, scaling: float | None = None, sliding_window: int | None = None,
                   softcap: float | None = None, tree_batch: PromptChunk | NodeRows | None = None,
                   **_: Any) -> tuple[torch.Tensor, None]:
    """An attention function for transformers' `AttentionInterface`: [B, L, H, D] out, no weights."""
    if tree_batch is None:
        raise RuntimeError("tree attention runs only inside ModelRunner (it needs the batch layout)")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    layer = int(module.layer_idx)  # type: ignore[arg-type]
    out = tree_batch.attend(layer, query, key, value, scaling, sliding_window, softcap)
    return out.contiguous(), None


def _no_mask(*_: Any, **__: Any) -> None:
    return None  # the layout carries the masks


AttentionInterface.register(ATTENTION_NAME, tree_attention)
AttentionMaskInterface.register(ATTENTION_NAME, _no_mask)


# Threads sharing one loaded model (the embedded worker beside a notebook's in-process build) each turn
# the switch on: it is counted per config, so the first to leave cannot turn it off under the others'
# forward passes (a layer run with the model's own attention would record no KV for the next chunk).
_switch_lock = threading.Lock()
_switch_users: dict[int, tuple[int, str | None]] = {}  # id(config) -> (users, the implementation before)


@contextlib.contextmanager
def tree_attention_on(model: PreTrainedModel) -> Iterator[None]:
    """Route the model's attention through `tree_attention` for the duration (the model object stays
    usable by ordinary callers before and after)."""
    config = model.config
    with _switch_lock:
        users, before = _switch_users.get(id(config), (0, config._attn_implementation))
        config._attn_implementation = ATTENTION_NAME
        _switch_users[id(config)] = (users + 1, before)
    try:
        yield
    finally:
        with _switch_lock:
            users, before = _switch_users.pop(id(config))
            if users > 1:
                _switch_users[id(config)] = (users - 1, before)
            else:
                config._attn_implementation = before
