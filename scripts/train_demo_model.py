"""Build the bundled demo model, `engine/demo_model/`, that tests, CI and newcomers use (`--model demo`).

Why it exists: tokentree must run and be tested without downloading weights. So we ship a real (tiny)
`Gemma2ForCausalLM` with its own byte-level BPE tokenizer, trained in a few minutes on 2 CPU cores on
English text that this script generates from a small probabilistic grammar. The grammar's choice
probabilities are picked so that the model's next-token distributions have genuine competition (several
continuations with probability 0.15-0.5) while every document ends with EOS after roughly 10-60 tokens:
token trees grown from generic prompts ("Once upon a time", "The secret to happiness is", ...) therefore
both branch and complete. A few chat-formatted samples make `--chat` answer sensibly.

Everything is seeded and single-sourced (fixed seeds, deterministic data order, fixed thread count), so
running the script twice gives the same tokenizer and the same losses.

Usage:
    python scripts/train_demo_model.py                # writes engine/demo_model/
    python scripts/train_demo_model.py --out /tmp/demo --steps 200
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma2Config,
    Gemma2ForCausalLM,
    GenerationConfig,
    PreTrainedTokenizerFast,
)

SEED = 1234
NUM_THREADS = 2
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "engine" / "demo_model"

# Special tokens, in id order: <pad>=0, <eos>=1, <bos>=2, <unk>=3 (Gemma's layout), then the chat markers.
PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
START_OF_TURN, END_OF_TURN = "<start_of_turn>", "<end_of_turn>"
SPECIAL_TOKENS = [PAD, EOS, BOS, UNK, START_OF_TURN, END_OF_TURN]
PAD_ID, EOS_ID, BOS_ID, UNK_ID, START_OF_TURN_ID, END_OF_TURN_ID = range(len(SPECIAL_TOKENS))
VOCAB_SIZE = 1024

# Gemma-style chat template; a system message is folded into the first user turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] | trim + '\n\n' %}"
    "{% else %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n"
    "{% if role == 'user' %}{{ ns.system }}{% set ns.system = '' %}{% endif %}"
    "{{ message['content'] | trim }}<end_of_turn>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

MAX_POSITIONS = 512

NUM_DOCUMENTS = 40_000
TOKENIZER_DOCUMENTS = 8_000
BATCH_SIZE = 32
TRAIN_STEPS = 1500
CHAT_FRACTION = 0.1
PEAK_LR = 3e-3
WARMUP_STEPS = 50
WEIGHT_DECAY = 0.01
LOG_EVERY = 50


# --------------------------------------------------------------------------------------------------
# The grammar
# --------------------------------------------------------------------------------------------------

Choice = str | Callable[["Grammar"], str]
Options = list[tuple[float, Choice]]


def zipf(*items: Choice) -> Options:
    """Weights 1, 1/2, 1/3, ...: the first item leads, the next few compete (5 items: .44 .22 .15 ...)."""
    return [(1.0 / (rank + 1), item) for rank, item in enumerate(items)]


def common_then_rare(common: Sequence[tuple[float, Choice]], rare: str) -> Options:
    """`common` items with their probabilities; the comma-separated `rare` ones share what is left.

    Common items make the model hesitate between a few continuations. Rare ones (about 0.03 each) add
    variety but stay below every branching threshold, so that big trees grow to thousands of nodes, not to
    tens of thousands.
    """
    rare_items = rare.split(", ")
    left = 1.0 - sum(weight for weight, _ in common)
    return [*common, *((left / len(rare_items), item) for item in rare_items)]


def with_article(phrase: str) -> str:
    """'an old key', 'a shiny stone'."""
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


HEROES = common_then_rare(
    [(0.5, "fox"), (0.25, "rabbit")], "bear, cat, dog, owl, mouse, frog, duck, wolf, deer, goat"
)
FRIENDS = common_then_rare([(0.7, "bird")], "bear, cat, dog, owl, mouse, frog, duck, wolf, deer, goat")
ADJECTIVES = common_then_rare(
    [(0.7, "little")], "young, clever, brave, happy, old, tiny, kind, shy, curious, small"
)
PLACES = common_then_rare(
    [(0.7, "the forest")],
    "a small village, the mountains, a big city, the garden, a quiet house, the hills, a dark cave, "
    "an old castle, the desert",
)
THINGS = common_then_rare(
    [(0.7, "shiny stone")],
    "red apple, old key, small box, blue feather, golden coin, tiny map, magic ring, lost shoe, little boat, "
    "yellow flower",
)
FEELINGS = common_then_rare(
    [(0.7, "happy")], "sad, tired, excited, scared, proud, hungry, sleepy, lonely, surprised"
)
ACTIVITIES = common_then_rare(
    [(0.7, "play")],
    "find food, look at the stars, sing, read a book, see the sea, dance, swim, climb trees, draw, rest",
)
NAMES = common_then_rare(
    [(0.4, "Tom"), (0.3, "Lily")], "Sam, Anna, Max, Mia, Ben, Rose, Leo, Ella, Jack, Emma"
)
FOODS = common_then_rare(
    [(0.35, "pizza"), (0.25, "soup"), (0.15, "rice")],
    "pasta, bread, chocolate, apples, fish, cake, noodles, salad, cheese, eggs",
)


class Grammar:
    """A tiny probabilistic grammar of English sentences and short stories, driven by one seeded RNG."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, options: Sequence[tuple[float, Choice]]) -> str:
        """One weighted choice; a callable option is expanded recursively."""
        weights = [weight for weight, _ in options]
        choice = self.rng.choices([item for _, item in options], weights=weights)[0]
        return choice(self) if callable(choice) else choice

    def chance(self, probability: float) -> bool:
        return self.rng.random() < probability

    # ---- stories ----------------------------------------------------------------------------------

    def story(self) -> str:
        """'Once upon a time, there was a little fox. One day, the fox found a shiny stone. The end.'

        A fixed shape (intro, first event, optional second event, optional ending) so that even a tiny
        model knows where a story may stop: trees from "Once upon a time" complete instead of looping.
        """
        hero = self.pick(HEROES)
        opener = self.pick([(0.65, ", there was"), (0.35, " there lived")])
        tail = self.pick(
            [
                (0.8, ""),
                (0.1, lambda g: f" who lived in {g.pick(PLACES)}"),
                (0.1, lambda g: f" named {g.pick(NAMES)}"),
            ]
        )
        intro = f"Once upon a time{opener} {with_article(self.pick(ADJECTIVES))} {hero}{tail}."
        sentences = [intro, self.first_event(hero)]
        if self.chance(0.45):
            sentences.append(self.second_event())
        if self.chance(0.3):
            sentences.append(self.pick([(0.6, "The end."), (0.4, "They lived happily ever after.")]))
        return " ".join(sentences)

    def first_event(self, hero: str) -> str:
        return self.pick(
            [
                (0.55, lambda g: f"One day, the {hero} found {with_article(g.pick(THINGS))}."),
                (0.45, lambda g: f"The {hero} was very {g.pick(FEELINGS)}."),
            ]
        )

    def second_event(self) -> str:
        return self.pick(
            [
                (0.6, lambda g: f"Then it met {with_article(g.pick(FRIENDS))}, and they became friends."),
                (0.4, lambda g: f"Every morning, it went to {g.pick(PLACES)} to {g.pick(ACTIVITIES)}."),
            ]
        )

    def beginning(self) -> str:
        """'In the beginning, there was only darkness. Then came the light.'"""
        first = self.pick(
            zipf(
                "In the beginning, there was only darkness.",
                "In the beginning, there was nothing.",
                "In the beginning, the world was empty and quiet.",
                "In the beginning was the word.",
            )
        )
        if self.chance(0.4):
            return first
        then = self.pick(
            zipf("Then came the light.", "Then the stars appeared.", "Then there was a small sound.")
        )
        return f"{first} {then}"

    # ---- opinions and facts -----------------------------------------------------------------------

    def happiness(self) -> str:
        """'The secret to happiness is to enjoy the little things.'"""
        secret = self.pick(
            zipf(
                lambda g: " to " + g.good_habit(),
                " a kind heart",
                " simple",
                " good friends",
                " to be grateful",
            )
        )
        text = f"The secret to happiness is{secret}."
        if self.chance(0.4):
            text += " " + self.pick(zipf("It is not always easy, but it is worth it.", "Try it today."))
        return text

    def good_habit(self) -> str:
        return self.pick(
            zipf(
                "enjoy the little things",
                "be kind to others",
                "spend time with friends",
                "laugh every day",
                "help other people",
                "sleep well",
            )
        )

    def learning(self) -> str:
        """'The best way to learn is to practice every day.'"""
        way = self.pick(
            zipf("to practice every day", "by doing", "to ask questions", "to read books", "to teach others")
        )
        text = f"The best way to learn is {way}."
        if self.chance(0.35):
            text += " " + self.pick(zipf("Do not be afraid to make mistakes.", "Start with small steps."))
        return text

    def capital(self) -> str:
        """'The capital of France is Paris, a city known for its art.'"""
        country, city = self.rng.choice(CAPITALS)
        known_for = self.pick(zipf("food", "art", "old streets", "music"))
        kind = self.pick(zipf("beautiful", "big", "busy", "famous"))
        ending = self.pick(
            [(0.45, "."), (0.3, f", a city known for its {known_for}."), (0.25, f" and it is a {kind} city.")]
        )
        return f"The capital of {country} is {city}{ending}"

    def favourite_food(self) -> str:
        """'My favourite food is pizza because it is tasty.'"""
        food = self.pick(FOODS)
        taste = self.pick(zipf("tasty", "sweet", "warm", "healthy", "easy to make"))
        reason = self.pick(
            [
                (0.4, f" because it is {taste}"),
                (0.35, ""),
                (0.25, f", but I also like {self.other_food(food)}"),
            ]
        )
        return f"My favourite food is {food}{reason}."

    def other_food(self, food: str) -> str:
        while (other := self.pick(FOODS)) == food:
            pass
        return other

    def meaning_of_life(self) -> str:
        """'The meaning of life is to be happy. Nobody knows for sure.'"""
        end = self.pick(
            zipf("to love and be loved", "to be happy", "to help others", "a mystery", "forty-two")
        )
        text = f"The meaning of life is {end}."
        if self.chance(0.4):
            text += " " + self.pick(zipf("Nobody knows for sure.", "At least, that is what I think."))
        return text

    def weather(self) -> str:
        """'The weather today is sunny, so we can go to the park.'"""
        state = self.pick(zipf("sunny", "rainy", "cold", "warm", "windy"))
        rest = self.pick(
            [(0.5, "."), (0.3, ", so I will stay at home."), (0.2, ", so we can go to the park.")]
        )
        return f"The weather today is {state}{rest}"

    def opinion(self) -> str:
        """'I think that cats are clever.'"""
        thought = self.pick(
            zipf("it will rain", "you are right", "cats are clever", "we should go home", "this is good")
        )
        text = f"I think {self.pick([(0.6, 'that '), (0.4, '')])}{thought}."
        if self.chance(0.3):
            text += " " + self.pick(zipf("What do you think?", "But I am not sure."))
        return text

    def greeting(self) -> str:
        """'Hello, my name is Tom. I am a teacher.'"""
        introduction = (
            f"Hello, my name is {self.pick(NAMES)}. I am {self.pick(zipf('a teacher', 'a student'))}."
        )
        return self.pick([(0.5, introduction), (0.3, "Hello! How are you today?"), (0.2, "Hello, world!")])

    def today(self) -> str:
        """'Today I went to the park. It was fun.'"""
        text = f"Today I {self.pick(zipf('went to the park', 'read a book', 'met a friend', 'made soup'))}."
        if self.chance(0.4):
            text += " " + self.pick(zipf("It was fun.", "It was a good day."))
        return text

    def daily_life(self) -> str:
        """Short everyday sentences, for variety."""
        return self.pick(
            zipf(
                lambda g: f"Every morning, I {g.pick(zipf('drink tea', 'go for a walk', 'read the news'))}.",
                lambda g: f"My friend {g.pick(NAMES)} likes to {g.pick(ACTIVITIES)}.",
                lambda g: f"A good friend is someone who {g.pick(zipf('listens', 'helps you', 'cares'))}.",
                lambda g: f"The little robot wanted to {g.pick(ACTIVITIES)}, so it tried again.",
                lambda g: f"The sky is {g.pick(zipf('blue', 'grey', 'full of stars'))} tonight.",
                lambda g: f"Life is {g.pick(zipf('beautiful', 'short', 'a long road', 'what you make it'))}.",
            )
        )

    def document(self) -> str:
        """One plain-text document (without BOS/EOS)."""
        return self.pick(DOCUMENT_KINDS)


CAPITALS = [
    ("France", "Paris"),
    ("Spain", "Madrid"),
    ("Italy", "Rome"),
    ("Germany", "Berlin"),
    ("Japan", "Tokyo"),
    ("England", "London"),
    ("Egypt", "Cairo"),
    ("Peru", "Lima"),
]

DOCUMENT_KINDS: Options = [
    (0.30, Grammar.story),
    (0.09, Grammar.happiness),
    (0.07, Grammar.capital),
    (0.07, Grammar.beginning),
    (0.08, Grammar.favourite_food),
    (0.08, Grammar.learning),
    (0.06, Grammar.meaning_of_life),
    (0.05, Grammar.weather),
    (0.05, Grammar.opinion),
    (0.04, Grammar.greeting),
    (0.04, Grammar.today),
    (0.07, Grammar.daily_life),
]

# (user question, answer generator) pairs for the chat samples.
CHAT_PAIRS: list[tuple[str, Callable[[Grammar], str]]] = [
    ("Tell me a story.", Grammar.story),
    ("Can you tell me a short story?", Grammar.story),
    ("What is the secret to happiness?", Grammar.happiness),
    ("What is the best way to learn?", Grammar.learning),
    ("What is your favourite food?", Grammar.favourite_food),
    ("What is the meaning of life?", Grammar.meaning_of_life),
    ("What is the capital of France?", lambda g: "The capital of France is Paris."),
    ("How is the weather?", Grammar.weather),
    ("Hello!", lambda g: g.pick(zipf("Hello! How can I help you today?", "Hi! What shall we talk about?"))),
    ("Hi", lambda g: g.pick(zipf("Hello! How can I help you today?", "Hi there! Ask me anything."))),
]


def render_chat(question: str, answer: str) -> str:
    """A single-turn conversation exactly as CHAT_TEMPLATE renders it, answer included."""
    return f"{BOS}{START_OF_TURN}user\n{question}{END_OF_TURN}\n{START_OF_TURN}model\n{answer}{END_OF_TURN}\n"


def generate_corpus(count: int, seed: int) -> tuple[list[str], list[str]]:
    """`count` samples in a fixed order: (plain documents, chat samples rendered with special tokens)."""
    grammar = Grammar(random.Random(seed))
    plain: list[str] = []
    chats: list[str] = []
    for _ in range(count):
        if grammar.chance(CHAT_FRACTION):
            question, answer = grammar.rng.choice(CHAT_PAIRS)
            chats.append(render_chat(question, answer(grammar)))
        else:
            plain.append(grammar.document())
    return plain, chats


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------


def without_special_tokens(text: str) -> str:
    for token in SPECIAL_TOKENS:
        text = text.replace(token, "\n")
    return text


def train_tokenizer(texts: Sequence[str]) -> Tokenizer:
    """Byte-level BPE with Gemma's special-token ids and a BOS-prepending post-processor."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([without_special_tokens(text) for text in texts], trainer=trainer)
    for token_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == token_id, f"{token} must have id {token_id}"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS}:1 $B:1",
        special_tokens=[(BOS, BOS_ID)],
    )
    return tokenizer


def wrap_tokenizer(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """The `transformers` face of the tokenizer: named special tokens and the chat template."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens=[START_OF_TURN, END_OF_TURN],
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=MAX_POSITIONS,
        padding_side="left",
    )


def encode_corpus(tokenizer: Tokenizer, plain: Sequence[str], chats: Sequence[str]) -> list[list[int]]:
    """Token ids per sample, each ending with <eos>; the post-processor adds <bos>, chats carry their own."""
    documents = tokenizer.encode_batch(list(plain), add_special_tokens=True)
    conversations = tokenizer.encode_batch(list(chats), add_special_tokens=False)
    return [[*encoding.ids, EOS_ID] for encoding in [*documents, *conversations]]


# --------------------------------------------------------------------------------------------------
# Model and training
# --------------------------------------------------------------------------------------------------


def build_model(vocab_size: int) -> Gemma2ForCausalLM:
    """A freshly initialised tiny Gemma 2: 4 layers, hidden 128, 4 heads of 32 (2 key-value heads)."""
    config = Gemma2Config(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        query_pre_attn_scalar=32,
        max_position_embeddings=MAX_POSITIONS,
        sliding_window=256,
        tie_word_embeddings=True,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=[EOS_ID, END_OF_TURN_ID],
    )
    return Gemma2ForCausalLM(config)


def make_batch(samples: Sequence[list[int]]) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (-100 on padding)."""
    width = max(len(sample) for sample in samples)
    input_ids = torch.full((len(samples), width), PAD_ID, dtype=torch.long)
    attention_mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, sample in enumerate(samples):
        input_ids[row, : len(sample)] = torch.tensor(sample)
        attention_mask[row, : len(sample)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def batches(samples: Sequence[list[int]], steps: int) -> Iterator[dict[str, torch.Tensor]]:
    """`steps` batches drawn epoch by epoch in a seeded shuffled order."""
    rng = random.Random(SEED + 1)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < BATCH_SIZE:
            epoch = list(range(len(samples)))
            rng.shuffle(epoch)
            order += epoch
        yield make_batch([samples[i] for i in order[:BATCH_SIZE]])
        del order[:BATCH_SIZE]


def learning_rate(step: int, total: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    if step < WARMUP_STEPS:
        return PEAK_LR * (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, total - WARMUP_STEPS)
    return PEAK_LR * (0.1 + 0.45 * (1.0 + math.cos(math.pi * progress)))


def train(model: Gemma2ForCausalLM, samples: Sequence[list[int]], steps: int) -> float:
    """AdamW with warmup and cosine decay; returns the mean loss of the last LOG_EVERY steps."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=PEAK_LR, weight_decay=WEIGHT_DECAY, betas=(0.9, 0.98)
    )
    model.train()
    recent: list[float] = []
    started = time.perf_counter()
    for step, batch in enumerate(batches(samples, steps)):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps)
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        recent = [*recent[-(LOG_EVERY - 1) :], loss.item()]
        if (step + 1) % LOG_EVERY == 0 or step == 0:
            mean = sum(recent) / len(recent)
            print(
                f"step {step + 1:5d}/{steps}  loss {mean:.4f}  ({time.perf_counter() - started:.0f}s)",
                flush=True,
            )
    model.eval()
    return sum(recent) / len(recent)


# --------------------------------------------------------------------------------------------------
# Saving and checking
# --------------------------------------------------------------------------------------------------


def prepare_output_folder(out: Path) -> None:
    """Empty `out` for a fresh save, refusing to wipe a folder that does not look like a model folder."""
    if out.exists():
        entries = list(out.iterdir())
        if entries and not (out / "config.json").exists():
            raise SystemExit(f"{out} is not empty and holds no config.json; refusing to overwrite it")
        for entry in entries:
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    out.mkdir(parents=True, exist_ok=True)


def save_model_folder(
    out: Path, model: Gemma2ForCausalLM, tokenizer: PreTrainedTokenizerFast, steps: int, final_loss: float
) -> None:
    prepare_output_folder(out)
    model.generation_config = GenerationConfig(
        bos_token_id=model.config.bos_token_id,
        eos_token_id=model.config.eos_token_id,
        pad_token_id=model.config.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out, save_jinja_files=False)  # the chat template goes in tokenizer_config.json
    (out / "model.safetensors").chmod(0o644)
    (out / "README.md").write_text(model_card(model, steps, final_loss))


def model_card(model: Gemma2ForCausalLM, steps: int, final_loss: float) -> str:
    """The folder's README; deliberately free of timings so that a rebuild reproduces it byte for byte."""
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    return f"""# tokentree demo model

A tiny `Gemma2ForCausalLM` ({params / 1e6:.2f}M parameters: {config.num_hidden_layers} layers, hidden size
{config.hidden_size}, {config.num_attention_heads} attention heads of size {config.head_dim},
vocabulary {config.vocab_size}) with its own byte-level BPE tokenizer. It is the model behind
`--model demo`, the tests and CI.

**For demos and tests only.** It knows nothing but a small procedurally generated grammar of English
sentences and short stories ("Once upon a time, ...", "The secret to happiness is ...", "The capital of
France is ...", "My favourite food is ...") plus a few Gemma-style chat samples. Its next-token
distributions are deliberately undecided at many points, and every text ends with `<eos>` (or, in chat,
`<end_of_turn>`) after roughly 10-60 tokens, so token trees both branch and complete.

Training: {NUM_DOCUMENTS} generated samples ({CHAT_FRACTION:.0%} chat), {steps} AdamW steps of batch
{BATCH_SIZE}, peak learning rate {PEAK_LR}, seed {SEED}, {NUM_THREADS} CPU threads; a few minutes on a
laptop. Final training loss {final_loss:.3f}. No external data.

Rebuild (deterministic: the same tokenizer and the same losses every run):

    python scripts/train_demo_model.py
"""


def check_folder(out: Path) -> None:
    """Reload the saved folder the way users will, check the tokenizer contract, and complete prompts."""
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]
    rendered = tokenizer.apply_chat_template(conversation, tokenize=False)
    assert rendered == render_chat("hi", "Hello!"), rendered
    text = " Once upon a time, there was a fox."
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id and tokenizer.decode(ids, skip_special_tokens=True) == text
    for prompt in ("Once upon a time", "The secret to happiness is"):
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            generated = model.generate(ids, max_new_tokens=80, do_sample=False)
        print(f"greedy: {tokenizer.decode(generated[0])!r}")
        assert generated[0, -1].item() in model.generation_config.eos_token_id, (
            "greedy text must end with EOS"
        )
    size = sum(path.stat().st_size for path in out.iterdir())
    print(f"saved {out}: {size / 1e6:.2f} MB ({', '.join(sorted(path.name for path in out.iterdir()))})")


def set_determinism() -> None:
    random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(NUM_THREADS)
    torch.use_deterministic_algorithms(True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output folder (its contents are replaced)"
    )
    parser.add_argument("--steps", type=int, default=TRAIN_STEPS, help="training steps")
    args = parser.parse_args()

    started = time.perf_counter()
    set_determinism()
    plain, chats = generate_corpus(NUM_DOCUMENTS, SEED)
    tokenizer = train_tokenizer([*plain[:TOKENIZER_DOCUMENTS], *chats[: TOKENIZER_DOCUMENTS // 10]])
    samples = encode_corpus(tokenizer, plain, chats)
    lengths = sorted(len(sample) for sample in samples)
    print(
        f"corpus: {len(plain)} documents + {len(chats)} chats; {tokenizer.get_vocab_size()} tokens in the "
        f"vocabulary; {lengths[0]}-{lengths[-1]} tokens per sample (median {lengths[len(lengths) // 2]})"
    )

    model = build_model(tokenizer.get_vocab_size())
    print(f"model: Gemma2ForCausalLM, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    final_loss = train(model, samples, args.steps)

    save_model_folder(args.out, model, wrap_tokenizer(tokenizer), args.steps, final_loss)
    check_folder(args.out)
    print(f"final loss {final_loss:.4f}; wall time {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
