"""Text for calibration and evaluation: raw text, DailyDialog files, JSONL chats, and the default
dialogue corpus (BYU Chit-Chat, from the chitchat-dataset package)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgechat.core.errors import EdgechatError

ROLES = ("user", "assistant")


@dataclass
class EvalData:
    kind: str  # "text" (llama.cpp-style chunks) or "dialogues" (score the assistant turns)
    name: str
    text: str = ""
    dialogues: list[list[dict]] = field(default_factory=list)


def as_messages(turns: list[str]) -> list[dict]:
    return [{"role": ROLES[i % 2], "content": t.strip()} for i, t in enumerate(turns) if t.strip()]


HELD_OUT_START = 7100  # conversations from here on are never used for calibration or distillation
DEFAULT_EVAL_NAME = "chitchat-heldout-20"


def chitchat_dialogues(start: int = 0, count: int = 20) -> list[list[dict]]:
    """The first `count` conversations with at least one exchange, from index `start` on (in sorted-id order).
    Each turn is one speaker's consecutive messages joined."""
    import importlib.util

    spec = importlib.util.find_spec("chitchat_dataset")
    if spec is None:
        raise EdgechatError("the default dialogue data needs the chitchat-dataset package: pip install chitchat-dataset==0.9.0")
    data = json.loads((Path(spec.submodule_search_locations[0]) / "dataset.json").read_text())
    convos = [data[k]["messages"] for k in sorted(data)]  # sorted ids: a stable, reproducible order
    out = []
    for convo in convos[start:]:
        msgs = as_messages([" ".join(m["text"] for m in turn) for turn in convo])
        if len(msgs) >= 2:
            out.append(msgs)
        if len(out) == count:
            break
    return out


def read_eval_data(path: str | Path | None, max_dialogues: int = 30) -> EvalData:
    """None: 20 held-out chit-chat conversations (calibration and distillation data start at 0)."""
    if path is None:
        return EvalData("dialogues", DEFAULT_EVAL_NAME, dialogues=chitchat_dialogues(HELD_OUT_START, 20))
    path = Path(path)
    if not path.exists():
        raise EdgechatError(f"no such data file: {path}")
    raw = path.read_text(encoding="utf-8", errors="replace")
    if not raw.strip():
        raise EdgechatError(f"the data file {path} is empty")
    if "__eou__" in raw:  # DailyDialog: one dialogue a line, turns split by __eou__
        lines = [ln for ln in raw.splitlines() if ln.strip()][:max_dialogues]
        return EvalData("dialogues", path.name, dialogues=[as_messages(ln.split("__eou__")) for ln in lines])
    if path.suffix == ".jsonl":
        dialogues, texts = [], []
        for ln in raw.splitlines():
            if not ln.strip():
                continue
            obj = json.loads(ln)
            if "messages" in obj:
                dialogues.append(obj["messages"])
            elif "text" in obj:
                texts.append(obj["text"])
        if dialogues:
            return EvalData("dialogues", path.name, dialogues=dialogues[:max_dialogues])
        return EvalData("text", path.name, text="\n\n".join(texts))
    return EvalData("text", path.name, text=raw)
