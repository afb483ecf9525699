"""The ExecuTorch engine for .pte artifacts: runs the program's `forward(tokens, input_pos)` (the signature
ExecuTorch's own LLM runner calls) over a static KV cache, with the tokenizer and chat template read from
the files beside the .pte (as `edgechat convert --format pte` writes them)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgechat.core import conversation
from edgechat.core.errors import EdgechatError
from edgechat.core.files import artifact_bytes, pte_data_file
from edgechat.core.native_io import quiet_stderr
from runtimes.base import Engine

# What ExecuTorch's stock LLM runner (TextLLMRunner) reads from a program before it runs it.
REQUIRED_METADATA = ("get_max_seq_len", "get_max_context_len", "get_bos_id", "get_eos_ids", "use_kv_cache",
                     "use_sdpa_with_kv_cache", "enable_dynamic_shape", "get_vocab_size", "get_n_layers")
ADD_BOS_METHOD = "edgechat_add_bos"  # ours: whether the tokenizer wants BOS (GGUF's tokenizer.ggml.add_bos_token)
ALL_LOGITS_METHOD = "forward_all"  # ours: same weights, logits at every position (for evaluation)


def runtime():
    """The ExecuTorch runtime with the kernels our programs use registered: the fused LLM ops
    (llama::custom_sdpa, llama::update_cache) and the quantized embedding ops."""
    with quiet_stderr():
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
        import executorch.kernels.quantized  # noqa: F401
        from executorch.runtime import Runtime

        return Runtime.get()


def set_threads(n: int | None) -> None:
    if n:
        from executorch.extension.pybindings import portable_lib

        with quiet_stderr():  # the first threadpool call probes the CPU and logs what it finds
            if portable_lib._threadpool_get_thread_count() != n:
                portable_lib._unsafe_reset_threadpool(n)


def load_tokenizer(folder: Path, bos_id: int | None, eos_ids: list[int], add_bos: bool):
    from edgechat.core.hf_files import guarded
    from edgechat.core.tokenizer import HFTokenizer, SPTokenizer

    if (folder / "tokenizer.json").exists():
        from tokenizers import Tokenizer

        tok = guarded(folder / "tokenizer.json", "is not a valid tokenizer.json", Tokenizer.from_file,
                      str(folder / "tokenizer.json"))
        return HFTokenizer(tok, bos_id=bos_id, eos_ids=eos_ids, add_bos=add_bos)
    if (folder / "tokenizer.model").exists():
        return guarded(folder / "tokenizer.model", "is not a valid SentencePiece model", SPTokenizer,
                       (folder / "tokenizer.model").read_bytes(), add_bos=add_bos)
    raise EdgechatError(f"no tokenizer beside {folder}: the .pte needs tokenizer.json or tokenizer.model in the "
                        "same directory (edgechat convert --format pte writes it there)")


def read_program(path: Path):
    """Load a .pte and its metadata methods; a clear error for a missing, foreign or metadata-less file."""
    if not path.is_file():
        raise EdgechatError(f"no such file: {path}")
    rt, ptd = runtime(), pte_data_file(path)
    if not ptd.exists():
        from edgechat.core.manifest import read_manifest

        entry = next((a for a in (read_manifest(path.parent) or {}).get("artifacts", [])
                      if a.get("file") == path.name), {})
        if entry.get("data_file"):
            raise EdgechatError(f"{path.name} keeps its weights' shared part in {entry['data_file']}, which is not "
                                f"beside it in {path.parent}: copy the two files together")
    try:
        with quiet_stderr():
            program = rt.load_program(path, data_path=ptd) if ptd.exists() else rt.load_program(path)
    except Exception as e:  # the runtime raises RuntimeError/ValueError with a status code
        raise EdgechatError(f"ExecuTorch could not load {path.name}"
                            + (f" with {ptd.name}" if ptd.exists() else "")
                            + f": {str(e).splitlines()[0] if str(e) else e} (not a valid .pte?)") from None
    names = program.method_names
    missing = [m for m in REQUIRED_METADATA if m not in names]
    if "forward" not in names or missing:
        what = ", ".join((["forward"] if "forward" not in names else []) + missing)
        raise EdgechatError(f"{path.name} lacks the LLM method(s) {what}: export it with "
                            "`edgechat convert SOURCE --format pte`")
    meta = {}
    try:
        for name in REQUIRED_METADATA + tuple(n for n in (ADD_BOS_METHOD,) if n in names):
            with quiet_stderr():
                out = program.load_method(name).execute([])
            meta[name] = out if name == "get_eos_ids" else (out[0] if out else None)
    except Exception as e:  # a damaged program loads but its methods fail ExecuTorch's checks
        raise EdgechatError(f"ExecuTorch could not run {path.name}'s metadata method {name}: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__} (a damaged .pte?)") from None
    return program, meta


class PteEngine(Engine):
    name = "executorch"

    def __init__(self, path: str | Path, n_ctx: int | None = None, threads: int | None = None,
                 logits_all: bool = False, **_ignored):
        path = Path(path)
        self.program, self.meta = read_program(path)
        if not self.meta["use_kv_cache"]:
            raise EdgechatError(f"{path.name} was exported without a KV cache; edgechat runs only KV-cache programs")
        folder = path.parent
        bos = self.meta["get_bos_id"]
        bos = None if bos is None or bos < 0 else int(bos)
        eos = [int(e) for e in self.meta["get_eos_ids"]]
        add_bos = bool(self.meta.get(ADD_BOS_METHOD, bos is not None))
        self.tok = load_tokenizer(folder, bos, eos, add_bos)
        from targets.host import physical_cores

        self.threads = threads or physical_cores()
        set_threads(self.threads)
        self.max_seq_len = int(self.meta["get_max_seq_len"])
        self.n_ctx = min(n_ctx, self.max_seq_len) if n_ctx else self.max_seq_len
        # The most tokens one call takes (the token dimension's upper bound): longer prefills go in chunks.
        self.chunk = self._max_tokens("forward") if self.meta["enable_dynamic_shape"] else 1
        self.n_vocab = int(self.meta["get_vocab_size"])
        self.model_path = str(path)
        self.model_bytes = artifact_bytes(path)
        template = folder / "chat_template.jinja"
        self.chat_template = template.read_text() if template.exists() else None
        self.bos_text, self.eos_text, self.add_bos = self.tok.bos_text, self.tok.eos_text, self.tok.add_bos
        self.eog_ids = frozenset(eos) | conversation.for_tokenizer(self.tok, self.chat_template).eog_ids
        try:
            with quiet_stderr():
                self._forward = self.program.load_method("forward")
        except Exception as e:
            raise EdgechatError(f"ExecuTorch could not load {path.name}'s forward method: "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__} (a damaged .pte"
                                + ("?)" if pte_data_file(path).exists() else ", or one whose .ptd data file is "
                                   "missing?)")) from None
        self._all = None
        self._ids: list[int] = []  # token at each position of the forward method's cache
        self._valid = 0  # positions [0, _valid) of that cache hold _ids' K/V

    def _max_tokens(self, method: str) -> int:
        sizes = self.program.metadata(method).input_tensor_meta(0).sizes()
        return max(1, int(sizes[-1]) if sizes else 1)

    # -- tokenizer ---------------------------------------------------------------------------------
    def tokenize(self, text, add_bos):
        return self.tok.encode(text, add_bos=add_bos)

    def detokenize(self, ids):
        return self.tok.decode(ids)

    # -- model -------------------------------------------------------------------------------------
    def _run(self, method, ids: list[int], start_pos: int):
        import torch

        tokens = torch.tensor([ids], dtype=torch.long)
        pos = torch.tensor([start_pos], dtype=torch.long)
        return method.execute([tokens, pos])[0]

    def _check_fits(self, n: int) -> None:
        if n > self.n_ctx:
            raise EdgechatError(f"the sequence is {n} tokens, but this .pte holds {self.n_ctx} "
                                f"(exported with --max-seq-len {self.max_seq_len}): shorten the prompt")

    def forward(self, ids, start_pos):
        ids = list(ids)
        if not ids:
            raise ValueError("forward() needs at least one token")
        self._check_fits(start_pos + len(ids))
        if start_pos > len(self._ids):
            raise ValueError(f"start_pos {start_pos} is past the {len(self._ids)} cached tokens")
        if self._valid < start_pos:  # the cache was overwritten (logits_all): run the kept tokens again
            ids, start_pos = self._ids[self._valid:start_pos] + ids, self._valid
        del self._ids[start_pos:]
        logits = None
        for s in range(0, len(ids), self.chunk):
            piece = ids[s:s + self.chunk]
            logits = self._run(self._forward, piece, start_pos + s)
        self._ids.extend(ids)
        self._valid = len(self._ids)
        return logits.reshape(-1, logits.shape[-1])[-1].float().numpy()

    def logits_all(self, ids):
        ids = list(ids)
        self._check_fits(len(ids))
        if ALL_LOGITS_METHOD not in self.program.method_names:  # one decode step per token
            kept, self._ids, self._valid = self._ids, [], 0
            out = np.stack([self.forward([t], i) for i, t in enumerate(ids)])
            self._ids, self._valid = kept, 0  # the cache now holds `ids`: a later forward replays `kept`
            return out
        if self._all is None:
            with quiet_stderr():
                self._all = self.program.load_method(ALL_LOGITS_METHOD)
        # Both methods may share one memory arena, so forward's cache is no longer trusted after this.
        self._valid = 0
        rows, step = [], self._max_tokens(ALL_LOGITS_METHOD)
        for s in range(0, len(ids), step):
            out = self._run(self._all, ids[s:s + step], s)
            rows.append(out.reshape(-1, out.shape[-1]).float().numpy())
        return np.concatenate(rows)

    def reset(self):
        self._ids = []
        self._valid = 0

    def close(self):
        self._forward = self._all = self.program = None

    def describe(self) -> dict:
        return {**super().describe(), "threads": self.threads, "n_batch": self.chunk, "max_seq_len": self.max_seq_len,
                "metadata": {k: v for k, v in self.meta.items()}}
