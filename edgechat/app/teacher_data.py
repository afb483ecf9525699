"""Distillation data written by the teacher itself: user turns from the chit-chat corpus, from a user's file, and
made up by the teacher when it is given only the chat template's user prefix (Magpie); the replies are the
teacher's own, generated on the fastest engine here: llama.cpp on a GGUF of the teacher, batched over parallel
sequences (runtimes.llama_batch, with Chat's template, sampler and stopping rule); the torch reference, one reply
after another through Chat, when llama.cpp is not installed.

The set is cached under edgechat's cache directory (teacher-data/<key>.jsonl, the key hashing the teacher's
weights and every option) and reused; its sha256 goes into the manifest. The student then trains on the
teacher's logits over these conversations with the loss on the assistant's tokens only (converters.distill)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgechat.app.loops import loops
from edgechat.app.sampling import Sampler, SamplingParams
from edgechat.core.errors import EdgechatError
from edgechat.core.model import Model

VERSION = 2  # bump when what a cached file holds would change for the same options
SENTINEL = "\x00USER-TURN\x00"
MAGPIE_TOKENS = 64  # most tokens of a user turn the teacher writes
MAGPIE_SAMPLING = {"temperature": 1.0, "top_p": 1.0}  # as Magpie samples user turns


@dataclass
class TeacherData:
    conversations: list[list[dict]]
    sources: list[str]  # per conversation: "chitchat", "file" or "magpie"
    sequences: list[list[int]]  # the conversation's token ids (the teacher's chat format)
    masks: list[list[bool]]  # True on the assistant's tokens
    path: str
    sha256: str
    options: dict = field(default_factory=dict)
    cached: bool = False
    student_replies: int = 0  # replies sampled from the student (on-policy, GKD-style), not part of the cached set
    dropped_looping: int = 0  # conversations left out because the reply loops (without_loops)
    avoid: list[list[bool]] | None = None  # True on tokens to push down (the repeats in looping student replies)

    def packed(self, seq_len: int):
        """The sequences and masks as converters.distill trains on them."""
        from converters.distill import pack_sequences

        student = [[m and src.endswith("+student") for m in mask] for mask, src in zip(self.masks, self.sources)]
        return pack_sequences(self.sequences, self.masks, seq_len, student, self.avoid)

    def without_loops(self) -> TeacherData:
        """The set without the conversations whose teacher-written reply loops (edgechat.app.loops; the student's
        own replies stay: their loops are what unlikelihood trains against); the cached file is untouched."""
        keep = [i for i, c in enumerate(self.conversations)
                if self.sources[i].endswith("+student") or not any(loops(m["content"]) for m in c[1:])]
        if not keep:
            raise EdgechatError(f"every one of the {len(self.conversations)} teacher-written replies loops: nothing is "
                                "left to train on without them (leave --drop-looping off)")
        return replace(self.subset(keep), dropped_looping=self.dropped_looping + len(self.conversations) - len(keep))

    def subset(self, keep: list[int]) -> TeacherData:
        """These conversations of the set, in this order."""
        pick = lambda xs: [xs[i] for i in keep]  # noqa: E731
        return replace(self, conversations=pick(self.conversations), sources=pick(self.sources),
                       sequences=pick(self.sequences), masks=pick(self.masks),
                       avoid=pick(self.avoid) if self.avoid is not None else None)

    def record(self) -> dict:
        """What the manifest keeps: where the set is, its hash, and what made it."""
        counts = {s: self.sources.count(s) for s in sorted(set(self.sources))}
        return {"path": self.path, "sha256": self.sha256, "conversations": len(self.conversations),
                "prompt_sources": counts, "assistant_tokens": sum(sum(m) for m in self.masks),
                "student_replies": self.student_replies, "dropped_looping": self.dropped_looping,
                "avoid_tokens": sum(map(sum, self.avoid)) if self.avoid is not None else 0,
                "options": self.options}


def assistant_mask(fmt, messages: list[dict]) -> tuple[list[int], list[bool]]:
    """The conversation's ids and which of them are the assistant's: each reply and its end of turn, as
    edgechat.app.evaluate scores them (ChatFormat.assistant_spans)."""
    ids, spans = fmt.assistant_spans(messages)
    mask = [False] * len(ids)
    for start, end in spans:
        mask[start:end] = [True] * (end - start)
    return ids, mask


def user_prefix(fmt) -> tuple[str, str]:
    """The template rendered up to where a user turn's text starts (Magpie's prompt), and the text that ends a
    user turn when it is not an end-of-turn token (plain templates: a newline)."""
    text = fmt.render([{"role": "user", "content": SENTINEL}], add_generation_prompt=True)
    prefix, _, after = text.partition(SENTINEL)
    return prefix, "\n" if after.startswith("\n") else ""


def read_prompts(path: str | Path) -> list[str]:
    """User turns from a file: JSONL ({"prompt": ...} or {"messages": [...]}: its first user turn), or plain
    text, one prompt a line."""
    path = Path(path)
    if not path.exists():
        raise EdgechatError(f"no such prompts file: {path}")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    out = []
    for n, ln in enumerate(lines, 1):
        if path.suffix == ".jsonl":
            try:
                obj = json.loads(ln)
            except json.JSONDecodeError as e:
                raise EdgechatError(f"{path}:{n} is not JSON: {e.msg}") from None
            text = obj.get("prompt") if isinstance(obj, dict) else None
            if text is None and isinstance(obj, dict):
                text = next((m.get("content") for m in obj.get("messages", []) if m.get("role") == "user"), None)
            if not isinstance(text, str):
                raise EdgechatError(f'{path}:{n} has no "prompt" string and no user message')
            ln = text.strip()
        if ln:
            out.append(ln)
    if not out:
        raise EdgechatError(f"the prompts file {path} holds no prompt")
    return out


def corpus_prompts(count: int, start: int = 0) -> list[str]:
    """The first user turn of `count` chit-chat conversations from `start` on."""
    from edgechat.core.data import chitchat_dialogues

    return [d[0]["content"] for d in chitchat_dialogues(start, count)]


def magpie_prompts(chat, count: int, seed: int) -> list[str]:
    """User turns the teacher writes itself, sampled from the template's user prefix; distinct and non-empty,
    the first `count` of attempts 0, 1, ... (each seeded by its number)."""
    prefix, stop = user_prefix(chat.format)
    add_bos = chat.format.add_bos and not (chat.format.bos_text and prefix.startswith(chat.format.bos_text))
    ids = chat.engine.tokenize(prefix, add_bos=add_bos)
    out: list[str] = []
    attempt = 0
    while len(out) < count and attempt < count * 4:
        tries = range(attempt, min(count * 4, attempt + count - len(out)))
        params = [SamplingParams(**MAGPIE_SAMPLING, seed=seed * 100003 + a) for a in tries]
        for text in replies(chat, [ids] * len(tries), MAGPIE_TOKENS, params):
            text = (text or "").split(stop)[0].strip() if stop else (text or "").strip()
            if text and text not in out and len(out) < count:
                out.append(text)
        attempt = tries.stop
    return out


def replies(chat, prompts: list[list[int]], max_tokens: int, params: list[SamplingParams] | None = None,
            progress=None) -> list[str | None]:
    """The reply text to each prompt (ids), None where it does not fit the context: batched on llama.cpp, one
    after another through Chat on other engines. params: per prompt (default: greedy)."""
    from runtimes.llama_batch import generate_many
    from runtimes.llama_cpp_engine import LlamaCppEngine

    e = chat.engine
    params = params or [SamplingParams(temperature=0.0)] * len(prompts)
    if isinstance(e, LlamaCppEngine):
        outs = generate_many(e, prompts, max_tokens, [Sampler(p) for p in params], progress=progress)
        return [None if o is None else e.detokenize(o) for o in outs]
    texts: list[str | None] = []
    for n, (ids, p) in enumerate(zip(prompts, params), 1):
        if len(ids) >= e.n_ctx:  # as Chat refuses a first message that fills the context
            texts.append(None)
        else:
            for _ in chat._generate(ids, replace(p, max_tokens=max_tokens), as_turn=False):
                pass
            texts.append(chat.last_reply.text)
        if progress:
            progress(n)
    return texts


def open_teacher_engine(teacher: Model, gguf_path, tmp: str, own_file: bool = True):
    """llama.cpp on the given GGUF, on the teacher's own file when it is one (own_file: a pruned student keeps
    its teacher's source record, not its weights), else on an F32 GGUF of it written to `tmp`; the torch
    reference when llama.cpp is not installed. F32 K/V, so replies are the model's own."""
    from runtimes import open_engine

    if importlib.util.find_spec("llama_cpp") is None:
        from runtimes.torch_engine import TorchEngine

        return TorchEngine(teacher, n_ctx=1024)
    if gguf_path is None and own_file and teacher.source.get("kind") in ("gguf", "default"):
        gguf_path = teacher.source["path"]
    if gguf_path is None:
        from converters.gguf_writer import write_gguf

        gguf_path = write_gguf(teacher, Path(tmp) / "teacher-f32.gguf", "f32")
    return open_engine("llama.cpp", Path(gguf_path), n_ctx=1024, kv_type="f32")


def teacher_hash(teacher: Model) -> str:
    if teacher.source.get("sha256"):
        return teacher.source["sha256"]
    h = hashlib.sha256()
    for k, v in sorted(teacher.module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().numpy().tobytes())
    return h.hexdigest()


def check_options(n: int, magpie_share: float, reply_tokens: int, student_share: float = 0.0) -> None:
    if n < 1:
        raise EdgechatError(f"--teacher-data must be at least 1 conversation, got {n}")
    if not 0 <= magpie_share <= 1:
        raise EdgechatError(f"--magpie-share must be between 0 and 1, got {magpie_share}")
    if not 0 <= student_share <= 1:
        raise EdgechatError(f"--student-share must be between 0 and 1, got {student_share}")
    if reply_tokens < 1:
        raise EdgechatError(f"the teacher's replies need at least 1 token, got reply_tokens = {reply_tokens}")


def teacher_conversations(teacher: Model, gguf_path: str | Path | None = None, n: int = 64, seed: int = 0,
                          prompts: str | Path | None = None, magpie_share: float = 0.25, reply_tokens: int = 128,
                          corpus_start: int = 0, cache: Path | None = None, progress=None) -> TeacherData:
    """n single-turn conversations: round(n * magpie_share) user turns written by the teacher, the rest from
    `prompts` (a file) or the chit-chat corpus (first user turns from conversation `corpus_start` on); each
    answered greedily by the teacher in at most reply_tokens tokens. Cached in `cache` (default: edgechat's
    cache dir, teacher-data/) under a key of the teacher's hash and these options."""
    from edgechat.core.files import cache_dir, file_sha256, write_text_atomic

    check_options(n, magpie_share, reply_tokens)
    n_magpie = round(n * magpie_share)
    given = read_prompts(prompts) if prompts else None
    options = {"n": n, "seed": seed, "magpie_share": magpie_share, "reply_tokens": reply_tokens,
               "prompts": {"path": str(prompts), "sha256": file_sha256(Path(prompts))} if prompts else None,
               "corpus_start": None if prompts else corpus_start,
               "gguf": file_sha256(Path(gguf_path)) if gguf_path else None}
    key = hashlib.sha256(json.dumps({"v": VERSION, "teacher": teacher_hash(teacher), **options},
                                    sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cache or cache_dir("teacher-data")) / f"{key}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    cached = path.exists()
    if not cached:
        rows = generate(teacher, gguf_path, n - n_magpie, n_magpie, seed, given, reply_tokens, corpus_start, progress)
        write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    fmt = teacher.chat_format()
    encoded = [assistant_mask(fmt, r["messages"]) for r in rows]
    return TeacherData([r["messages"] for r in rows], [r["source"] for r in rows], [e[0] for e in encoded],
                       [e[1] for e in encoded], str(path), file_sha256(path), options, cached)


def check_config(cfg) -> None:
    """A DistillConfig's teacher-data options (and its divergence), checked before any model work."""
    from converters.distill_loss import check_divergence

    check_divergence(cfg.divergence)
    if cfg.alpha_ul < 0:
        raise EdgechatError(f"--alpha-ul must be at least 0, got {cfg.alpha_ul}")
    if cfg.resample_every < 0:
        raise EdgechatError(f"--resample-every must be at least 0 steps, got {cfg.resample_every}")
    for flag, on, why in (("--resample-every", cfg.resample_every, "it samples the student's share of the replies "
                                                                    "again as it trains"),
                          ("--student-greedy", cfg.student_greedy, "it picks how the student's share of the replies "
                                                                   "is decoded"),
                          ("--alpha-ul", cfg.alpha_ul, "it pushes down the repeats in the student's own greedy replies")):
        if on and not (cfg.teacher_data and cfg.student_share):
            raise EdgechatError(f"{flag} needs --teacher-data and --student-share: {why}")
    if not cfg.teacher_data:
        return
    if cfg.data:
        raise EdgechatError("give the distillation either a data file or --teacher-data, not both")
    check_options(cfg.teacher_data, cfg.magpie_share, cfg.reply_tokens, cfg.student_share)
    if cfg.prompts:
        read_prompts(cfg.prompts)


def generate(teacher, gguf_path, n_given, n_magpie, seed, given, reply_tokens, corpus_start, progress) -> list[dict]:
    from edgechat.app.chat import Chat

    with tempfile.TemporaryDirectory(prefix="edgechat-teacher-") as tmp:
        engine = open_teacher_engine(teacher, gguf_path, tmp)
        try:
            chat = Chat(engine, temperature=0.0, max_tokens=reply_tokens)
            chat.probes = False
            if given is not None:
                import random

                pool = list(given)
                random.Random(seed).shuffle(pool)
                user = [(p, "file") for p in (pool * (n_given // max(1, len(pool)) + 1))[:n_given]]
            else:
                user = [(p, "chitchat") for p in corpus_prompts(n_given, corpus_start)]
            if n_magpie:
                if progress:
                    progress.step("teacher writing user turns (Magpie)")
                user += [(p, "magpie") for p in magpie_prompts(chat, n_magpie, seed)]
            advance = progress.step("teacher replies", total=len(user)) if progress else None
            texts = replies(chat, [chat.prompt_ids([{"role": "user", "content": p}]) for p, _ in user],
                            reply_tokens, progress=advance)
            rows = [{"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}],
                     "source": source} for (prompt, source), text in zip(user, texts)
                    if text is not None]  # None: a prompt longer than the context, left out
        finally:
            engine.close()
    if not rows:
        raise EdgechatError("the teacher answered none of the prompts (every one longer than its context)")
    return rows
