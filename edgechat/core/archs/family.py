"""The base of every model family: the Llama-shaped defaults that a family's module overrides by attribute
(block features, names, markers) or by method (config and GGUF mappings that differ)."""
from __future__ import annotations

import numpy as np

from edgechat.core.archs import rope_scaling
from edgechat.core.config import ModelConfig
from edgechat.core.errors import EdgechatError


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF -> GGUF, exactly as llama.cpp's convert_hf_to_gguf.py LlamaModel.permute."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """GGUF -> HF, the inverse of permute_qk."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class Family:
    name: str = ""  # ModelConfig.arch
    hf_architectures: tuple[str, ...] = ()  # config.json "architectures"
    hf_model_type: str = ""  # config.json "model_type"
    gguf_arch: str = ""  # the member of gguf-py's MODEL_ARCH
    end_of_turn: tuple[str, ...] = ()  # markers its chat templates end a turn with (may not be the EOS token)
    # block features the one Transformer reads (through the config this family builds)
    attention_bias: bool = False  # q/k/v projections have biases
    rms_norm_eps: float = 1e-5  # when config.json gives none
    # GGUF: llama.cpp's llama graph ropes interleaved pairs, so its Q/K rows are permuted from HF's half-split
    permute_qk: bool = False
    heads_span_hidden: bool = False  # llama.cpp's graph needs heads x head_dim == hidden size
    # (our tensor-name part, this family's checkpoint name part): checkpoints that name a tensor differently
    checkpoint_renames: tuple[tuple[str, str], ...] = ()

    rope_types: tuple[str, ...] = ("default",)  # the RoPE types this family's engines all run
    # -- Hugging Face config.json ------------------------------------------------------------------
    def config_from_hf(self, cfg: dict) -> ModelConfig:
        try:
            n_heads, hidden = cfg["num_attention_heads"], cfg["hidden_size"]
            max_pos = cfg.get("max_position_embeddings", 2048)
            rope = self.rope_parameters(cfg)
            fields = dict(
                arch=self.name, vocab_size=cfg["vocab_size"], hidden_size=hidden,
                intermediate_size=cfg["intermediate_size"], num_layers=cfg["num_hidden_layers"],
                num_heads=n_heads, num_kv_heads=cfg.get("num_key_value_heads") or n_heads,
                head_dim=cfg.get("head_dim") or hidden // n_heads, max_seq_len=max_pos,
                rope_theta=float(rope.get("rope_theta", 10000.0)),
                rms_norm_eps=float(cfg.get("rms_norm_eps", self.rms_norm_eps)),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                attention_bias=self.attention_bias or bool(cfg.get("attention_bias", False)),
                **self.rope_fields(rope, cfg))
            return ModelConfig(**{**fields, **self.features_from_hf(cfg)})
        except KeyError as e:
            raise EdgechatError(f"config.json is missing the key {e.args[0]!r}") from None

    def rope_parameters(self, cfg: dict) -> dict:
        """The global layers' RoPE parameters, wherever this config.json keeps them (transformers 5's
        rope_parameters, per layer type or not; older rope_theta + rope_scaling)."""
        rope = cfg.get("rope_parameters") or {}
        rope = rope.get("full_attention", rope)
        return {"rope_theta": cfg.get("rope_theta", 10000.0), **(cfg.get("rope_scaling") or {}), **rope}

    def rope_fields(self, rope: dict, cfg: dict) -> dict:
        """ModelConfig's RoPE fields; a RoPE type this family's engines cannot all run is refused by name."""
        return rope_scaling.from_hf(rope, cfg, self.rope_types, self.name)

    def features_from_hf(self, cfg: dict) -> dict:
        """This family's block features (ModelConfig fields) from its config.json."""
        return {}

    @staticmethod
    def window_from_hf(cfg: dict) -> int | None:
        """A sliding window that is shorter than the context (a longer one changes nothing)."""
        window = cfg.get("sliding_window")
        return window if window and window < cfg.get("max_position_embeddings", 2048) else None

    def config_to_hf(self, c: ModelConfig) -> dict:
        return {
            "architectures": [self.hf_architectures[0]], "model_type": self.hf_model_type,
            "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
            "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
            "num_key_value_heads": c.num_kv_heads, "head_dim": c.head_dim, "max_position_embeddings": c.max_seq_len,
            "rope_theta": c.rope_theta, "rope_parameters": self.rope_to_hf(c),
            "rms_norm_eps": c.rms_norm_eps, "tie_word_embeddings": c.tie_word_embeddings, "hidden_act": c.hidden_act,
            "torch_dtype": "float32",
        }

    def rope_to_hf(self, c: ModelConfig) -> dict:
        return rope_scaling.to_hf(c)

    # -- checkpoint tensor names -------------------------------------------------------------------
    def from_checkpoint_name(self, name: str) -> str:
        for ours, theirs in self.checkpoint_renames:
            name = name.replace(theirs, ours)
        return name

    def to_checkpoint_name(self, name: str) -> str:
        for ours, theirs in self.checkpoint_renames:
            name = name.replace(ours, theirs)
        return name

    def from_checkpoint(self, tensors: dict, c: ModelConfig) -> dict:
        """A checkpoint's tensors -> ours (HF layout, one tensor per projection)."""
        return {self.from_checkpoint_name(k): v for k, v in tensors.items()}

    def to_checkpoint(self, state: dict, c: ModelConfig) -> dict:
        """Ours -> this family's checkpoint tensors (the inverse of from_checkpoint)."""
        return {self.to_checkpoint_name(k): v for k, v in state.items()}

    # -- GGUF --------------------------------------------------------------------------------------
    @property
    def gguf_name(self) -> str:
        """general.architecture, as gguf-py spells it."""
        import gguf

        return gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[self.gguf_arch]]

    def gguf_tensor_names(self, c: ModelConfig, names) -> dict[str, str]:
        """Our (HF-layout) tensor name -> GGUF name, from gguf-py's TensorNameMap for this architecture."""
        import gguf

        tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH[self.gguf_arch], c.num_layers)
        out = {}
        for name in names:
            mapped = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
            if mapped is None:
                raise KeyError(f"no GGUF name for tensor {name}")
            out[name] = mapped
        return out

    def qk_permute_heads(self, name: str, c: ModelConfig) -> int | None:
        """The heads to permute this tensor's rows by for GGUF, or None if it is stored as in HF."""
        if not self.permute_qk:
            return None
        if ".q_proj." in name:
            return c.num_heads
        if ".k_proj." in name:
            return c.num_kv_heads
        return None

    # (gguf.Keys path, config attribute, value type): the hyper-parameters, written and read by one table
    GGUF_FIELDS = (("LLM.CONTEXT_LENGTH", "max_seq_len", "uint32"), ("LLM.EMBEDDING_LENGTH", "hidden_size", "uint32"),
                   ("LLM.BLOCK_COUNT", "num_layers", "uint32"), ("LLM.FEED_FORWARD_LENGTH", "intermediate_size", "uint32"),
                   ("Attention.HEAD_COUNT", "num_heads", "uint32"), ("Attention.HEAD_COUNT_KV", "num_kv_heads", "uint32"),
                   ("Attention.KEY_LENGTH", "head_dim", "uint32"), ("Attention.VALUE_LENGTH", "head_dim", "uint32"),
                   ("Rope.DIMENSION_COUNT", "rope_dim", "uint32"), ("Rope.FREQ_BASE", "rope_theta", "float32"),
                   ("Attention.LAYERNORM_RMS_EPS", "rms_norm_eps", "float32"), ("LLM.VOCAB_SIZE", "vocab_size", "uint32"))

    def gguf_keys(self) -> list[tuple[str, str, str]]:
        """(metadata key, config attribute, value type) for this architecture."""
        return [(self.key(path), attr, vtype) for path, attr, vtype in self.GGUF_FIELDS]

    def write_gguf_config(self, w, c: ModelConfig) -> None:
        """The hyper-parameters, through gguf-py's GGUFWriter."""
        import gguf

        for key, attr, vtype in self.gguf_keys():
            getattr(w, f"add_{vtype}")(key, getattr(c, attr))
        if c.rope_type == "linear":
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(c.rope_factor)

    def gguf_refusal(self, c: ModelConfig) -> str | None:
        """Why llama.cpp cannot run this config correctly (a feature its graph for this architecture lacks),
        or None. Checked before anything is written."""
        if c.sliding_window is not None:
            return (f"{self.name}'s sliding window ({c.sliding_window} tokens) is not run by llama.cpp's "
                    f"{self.gguf_name} graph, which would attend beyond it")
        return None

    def gguf_tensors(self, c: ModelConfig, state: dict):
        """(GGUF name, float32 array) of every tensor, in llama.cpp's layout, then the generated ones."""
        state = self.to_gguf_layout(state, c)
        names = self.gguf_tensor_names(c, state)
        for hf_name, tensor in state.items():
            arr = tensor.detach().float().numpy()
            heads = self.qk_permute_heads(hf_name, c)
            if heads:
                arr = permute_qk(arr, heads)
            yield names[hf_name], self.gguf_tensor_data(hf_name, arr)
        yield from self.gguf_extra_tensors(c)

    def gguf_tensor_data(self, hf_name: str, arr: np.ndarray) -> np.ndarray:
        return arr

    def gguf_extra_tensors(self, c: ModelConfig):
        """Llama 3's RoPE scaling goes into GGUF as llama.cpp reads it: the rope_freqs tensor of divisors."""
        if c.rope_type == "llama3":
            from edgechat.core.rope import rope_freq_factors

            yield "rope_freqs.weight", rope_freq_factors(c).numpy()

    def key(self, path: str) -> str:
        """A metadata key of this architecture: key("Rope.FREQ_BASE_SWA") -> "gemma3.rope.freq_base_swa"."""
        from gguf import Keys

        group, name = path.split(".")
        return getattr(getattr(Keys, group), name).format(arch=self.gguf_name)

    def config_from_gguf(self, meta: dict, tensor_names, n_vocab: int, read=None) -> ModelConfig:
        """meta: the file's scalar metadata; tensor_names: every tensor's GGUF name; read(name): a tensor's
        values as float32 (None when only the header is read: the shape is right, RoPE factors are left out)."""
        got = {}
        for key, attr, _ in self.gguf_keys():
            if meta.get(key) is not None:
                got.setdefault(attr, meta[key])
        missing = [a for a in ("hidden_size", "num_heads", "num_layers", "intermediate_size") if a not in got]
        if missing:
            raise EdgechatError(f"the GGUF file lacks {self.gguf_name}'s hyper-parameters ({', '.join(missing)}): "
                                "it is not a complete model")
        names = set(tensor_names)
        head_dim = got.get("head_dim") or got["hidden_size"] // got["num_heads"]
        fields = dict(
            arch=self.name, vocab_size=got.get("vocab_size") or n_vocab, hidden_size=got["hidden_size"],
            intermediate_size=got["intermediate_size"], num_layers=got["num_layers"], num_heads=got["num_heads"],
            num_kv_heads=got.get("num_kv_heads") or got["num_heads"], head_dim=head_dim,
            max_seq_len=got.get("max_seq_len", 2048), rope_theta=float(got.get("rope_theta", 10000.0)),
            rms_norm_eps=float(got.get("rms_norm_eps", self.rms_norm_eps)),
            tie_word_embeddings="output.weight" not in names, attention_bias="blk.0.attn_q.bias" in names,
            qk_norm="blk.0.attn_q_norm.weight" in names,
            partial_rotary_factor=got.get("rope_dim", head_dim) / head_dim)
        fields.update(self.rope_from_gguf(meta, names, read, fields))
        fields.update(self.features_from_gguf(meta, fields))
        return ModelConfig(**fields)

    def rope_from_gguf(self, meta: dict, names: set, read, fields: dict) -> dict:
        """The RoPE scaling fields, as llama.cpp reads them from this family's GGUF."""
        return rope_scaling.from_gguf(meta, names, read, fields, self.key)

    def features_from_gguf(self, meta: dict, fields: dict) -> dict:
        """This family's block features (ModelConfig fields) from its GGUF metadata."""
        return {}

    # the GGUF's tensor layout, when it is not ours (Phi-3 keeps its fused projections); both take HF names
    def to_gguf_layout(self, state: dict, c: ModelConfig) -> dict:
        return state

    def from_gguf_layout(self, state: dict, c: ModelConfig) -> dict:
        return state

    def from_gguf_tensor_data(self, hf_name: str, arr: np.ndarray) -> np.ndarray:
        """The inverse of gguf_tensor_data."""
        return arr
