"""Loading a causal LM and its tokenizer, and turning a user's prompt into model input ids.

`--model` takes `demo` (the bundled checkpoint), a local folder, or a Hugging Face Hub id. Everything a
user can get wrong raises `ModelLoadError` or `ParameterError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch
from huggingface_hub import constants as hub_constants
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, PreTrainedModel
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from tokentree.engine import DEMO_MODEL_DIR
from tokentree.engine.errors import ModelLoadError
from tokentree.engine.params import ParameterError, check_prompt

DType = Literal["auto", "bf16", "fp16", "fp32"]
Device = Literal["auto", "cpu", "cuda"]
Quantization = Literal["none", "4bit", "8bit"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load and how."""

    name: str = "demo"
    dtype: DType = "auto"
    device: Device = "auto"
    quantization: Quantization = "none"


@dataclass
class LoadedModel:
    """A model ready to run, with what the engine needs to know about it."""

    spec: ModelSpec
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    stop_ids: frozenset[int]
    context_length: int | None
    source: str
    # What the model computes, named: equal for two loads exactly when their trees can be equal (see
    # `model_fingerprint`). A job records it, and a worker whose model differs refuses the job's nodes.
    fingerprint: str
    _decoded: dict[int, str] = field(default_factory=dict, repr=False)
    _bytes: dict[int, bytes | None] = field(default_factory=dict, repr=False)

    @property
    def dtype(self) -> str:
        return str(self.model.dtype).removeprefix("torch.")

    def decode(self, token_id: int) -> str:
        """One token's text, as the seed showed it (`tokenizer.decode([id])`), memoised."""
        text = self._decoded.get(token_id)
        if text is None:
            text = str(self.tokenizer.decode([token_id]))
            self._decoded[token_id] = text
        return text

    def token_bytes(self, token_id: int) -> bytes | None:
        """One token's bytes where its text (`decode`) is not valid UTF-8 on its own (it shows U+FFFD: a
        piece of a character); None where the text says it all. Memoised."""
        if token_id not in self._bytes:
            self._bytes[token_id] = (
                piece_bytes(self.tokenizer, token_id) if "\ufffd" in self.decode(token_id) else None
            )
        return self._bytes[token_id]

    def with_stop_ids(self, extra: list[int]) -> LoadedModel:
        """The same model with more stop tokens: a new object, since `load_model` shares this one with
        every later caller."""
        vocab = self.tokenizer.vocab_size if self.tokenizer.vocab_size else len(self.tokenizer)
        for token_id in extra:
            if not 0 <= token_id < max(vocab, len(self.tokenizer)):
                raise ParameterError("stop_token", f"{token_id} is not a token id of this model")
        return dataclasses.replace(self, stop_ids=self.stop_ids | frozenset(extra))


_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece's byte-fallback pieces


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Byte-level BPE's map from the printable characters its vocabulary is written in to bytes."""
    return {char: byte for byte, char in bytes_to_unicode().items()}


def _is_byte_level(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer's pieces are bytes written as GPT-2's printable characters (its decoder is,
    or contains, the ByteLevel decoder)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if decoder is None:
        return False
    return b'"ByteLevel"' in decoder.__getstate__()


def piece_bytes(tokenizer: PreTrainedTokenizerBase, token_id: int) -> bytes:
    """The bytes a token stands for, from its vocabulary piece: a byte-fallback piece `<0xNN>` is byte
    NN; a byte-level BPE piece maps back through the byte decoder; any other piece is its text (with
    SentencePiece's word mark as a space)."""
    piece = str(tokenizer.convert_ids_to_tokens(token_id))
    if match := _BYTE_FALLBACK.fullmatch(piece):
        return bytes([int(match[1], 16)])
    decoder = _byte_decoder()
    if _is_byte_level(tokenizer) and all(char in decoder for char in piece):
        return bytes(decoder[char] for char in piece)
    return piece.replace("\u2581", " ").encode("utf-8")


def resolve_source(name: str) -> str:
    """`demo` -> the bundled folder; an existing folder -> itself; anything else is taken as a Hub id."""
    if name == "demo":
        if not (DEMO_MODEL_DIR / "config.json").is_file():
            raise ModelLoadError(
                f"the bundled demo model is missing from {DEMO_MODEL_DIR}; reinstall tokentree or rebuild it "
                "with scripts/train_demo_model.py"
            )
        return str(DEMO_MODEL_DIR)
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists() or name.startswith((".", "/", "~")):
        raise ModelLoadError(f"model folder {name!r} does not exist or is not a folder")
    return name


def hub_reachable(timeout_s: float = 2.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection now: one quick try (the Hub client retries
    an unreachable host for about a minute before it gives up)."""
    if hub_constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(hub_constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    reached: list[bool] = []
    over = threading.Event()

    def attempt() -> None:
        try:
            socket.create_connection((endpoint.hostname or "", port), timeout=timeout_s).close()
            reached.append(True)
        except OSError:
            pass
        finally:
            over.set()

    # In a thread we stop waiting for: the connection's timeout does not cover resolving the name, and a
    # DNS server that does not answer holds a lookup for its own retries (5 s a try, several tries).
    threading.Thread(target=attempt, name="hub-check", daemon=True).start()
    over.wait(timeout_s)
    return bool(reached)


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """huggingface_hub's offline mode for one load from the cache. `local_files_only` alone still lets it
    ask the Hub for its agent registry (for the user-agent header) first: seconds more behind a firewall
    that drops packets, and a wait of the resolver's making behind one that does not answer. Restored
    afterwards, so that a long-lived worker is not left offline by a passing outage."""
    saved = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved


def pick_device(device: Device) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for, but no CUDA GPU is available")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(dtype: DType, device: str) -> torch.dtype:
    if dtype != "auto":
        return _DTYPES[dtype]
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _quantization_config(quantization: Quantization, device: str) -> Any:
    if quantization == "none":
        return None
    if device != "cuda":
        raise ModelLoadError(
            f"{quantization} quantization runs on bitsandbytes and needs a CUDA GPU; none is in use"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(
            f"{quantization} quantization needs bitsandbytes: pip install 'tokentree[quant]'"
        )
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)
    return BitsAndBytesConfig(load_in_8bit=True)


def stop_ids_of(
    tokenizer: PreTrainedTokenizerBase, generation_config: GenerationConfig | None
) -> frozenset[int]:
    """The tokenizer's EOS plus every EOS id of the generation config (gemma-2-it's `<end_of_turn>` too)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    eos = generation_config.eos_token_id if generation_config is not None else None
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(int(i) for i in eos)
    return frozenset(ids)


@lru_cache(maxsize=4)
def load_model(spec: ModelSpec) -> LoadedModel:
    """Load once per process and spec; later calls share the same weights."""
    source = resolve_source(spec.name)
    device = pick_device(spec.device)
    dtype = pick_dtype(spec.dtype, device)
    quantization = _quantization_config(spec.quantization, device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if device == "cuda":
        kwargs["device_map"] = "auto"  # accelerate spreads a model too large for one GPU over all of them
    offline = not Path(source).is_dir() and not hub_reachable()
    try:
        # A Hub id with the Hub unreachable: the local cache only, so a missing model fails at once.
        with _hub_offline() if offline else contextlib.nullcontext():
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
            model = AutoModelForCausalLM.from_pretrained(source, local_files_only=offline, **kwargs)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        why = (f"the Hugging Face Hub has no such model ({first_line})" if not offline else
               "the Hugging Face Hub cannot be reached and it is not in the local cache; give the path of a "
               "local model folder")
        raise ModelLoadError(f"cannot load model {spec.name!r}: not a local model folder, and {why}") from exc
    if device == "cpu":
        model = model.to("cpu")  # type: ignore[arg-type]  # transformers types .to() oddly
    model.eval()
    generation_config = getattr(model, "generation_config", None)
    stop_ids = stop_ids_of(tokenizer, generation_config)
    if not stop_ids:
        raise ModelLoadError(f"model {spec.name!r} defines no EOS token; give one with --stop-token")
    text_config = model.config.get_text_config()
    context = getattr(text_config, "max_position_embeddings", None)
    return LoadedModel(
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        stop_ids=stop_ids,
        context_length=int(context) if context else None,
        source=source,
        fingerprint=model_fingerprint(model, tokenizer),
    )


def encode_prompt(lm: LoadedModel, prompt: str, chat: bool = False, prefix: str | None = None) -> list[int]:
    """Input ids for the model: the prompt (as a chat user turn if asked), then a forced response prefix.

    Without chat the ids are `tokenizer(prompt).input_ids`, as the seed did (the tokenizer adds its BOS).
    """
    check_prompt(prompt)
    tokenizer = lm.tokenizer
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise ParameterError("chat", f"model {lm.spec.name!r} has no chat template")
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        ids = list(tokenizer(text, add_special_tokens=False).input_ids)
    else:
        ids = list(tokenizer(prompt).input_ids)
    if prefix:
        ids += list(tokenizer(prefix, add_special_tokens=False).input_ids)
    if lm.context_length is not None and len(ids) >= lm.context_length:
        raise ParameterError(
            "prompt", f"is {len(ids)} tokens long; the model's context holds {lm.context_length}"
        )
    return ids


# Elements read from each weight tensor for the fingerprint: enough that two different checkpoints (or one
# at two dtypes) differ in practice, few enough that a 70B model is fingerprinted in well under a second.
FINGERPRINT_SAMPLES = 1024


@torch.no_grad()
def model_fingerprint(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> str:
    """A short hash of what decides a tree: the architecture's config (less where it was loaded from),
    the tokenizer's vocabulary and chat template, and every weight tensor's name, dtype, shape and the
    raw bytes of evenly spaced elements. Two workers that load one checkpoint the same way agree on any
    host; a different checkpoint, dtype or quantization gives another fingerprint. Reads no files, so a
    Hub model, a folder and the demo are treated alike."""
    digest = hashlib.sha256()
    config = {k: v for k, v in model.config.to_dict().items()
              if not k.startswith("_") and k != "transformers_version"}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(str(getattr(tokenizer, "chat_template", None)).encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        if tensor.device.type == "meta" or tensor.numel() == 0:  # offloaded by accelerate: no data here
            continue
        flat = tensor.detach().reshape(-1)
        count = min(flat.numel(), FINGERPRINT_SAMPLES)
        # Integer arithmetic, so the same elements are read on any device (a float linspace rounds).
        picks = torch.arange(count, dtype=torch.int64) * (flat.numel() - 1) // max(1, count - 1)
        sample = flat[picks.to(flat.device)].contiguous().cpu()
        digest.update(sample.view(torch.uint8).numpy().tobytes())  # raw bytes: bf16 has no numpy dtype
    return digest.hexdigest()[:16]
