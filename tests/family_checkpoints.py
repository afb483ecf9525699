"""Tiny random checkpoints of each supported family, saved by transformers (test-only), each with a real
byte-level BPE tokenizer and the family's own chat template (written here as a fixture, shaped like the
released models' templates). Built once per session by `build(name, base_dir)`."""
from __future__ import annotations

import json
from pathlib import Path

TEXT = ["Hello there, how are you today? I am fine, thank you.", "The capital of France is Paris.",
        "Once upon a time there was a little robot who loved to read books.",
        "Let me think about it step by step before I answer."] * 50

LLAMA3_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + "
                   "m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
CHATML_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# Qwen3's own logic for the thinking block: an assistant turn keeps only what follows </think>, except the
# last assistant turn after the last user query, which keeps its reasoning; enable_thinking=false writes an
# empty block into the generation prompt
QWEN3_TEMPLATE = (
    "{%- set ns = namespace(last_query=messages|length - 1) %}"
    "{%- for m in messages[::-1] %}{%- set i = messages|length - 1 - loop.index0 %}"
    "{%- if m.role == 'user' and ns.last_query == messages|length - 1 and loop.first == false %}{%- endif %}"
    "{%- endfor %}"
    "{%- for m in messages %}{%- if m.role == 'user' %}{%- set ns.last_query = loop.index0 %}{%- endif %}{%- endfor %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' %}"
    "{%- set content = m.content %}{%- set reasoning = '' %}"
    "{%- if '</think>' in content %}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\n') %}{%- endif %}"
    "{%- if loop.index0 > ns.last_query and reasoning %}"
    "{{- '<|im_start|>assistant\n<think>\n' + reasoning + '\n</think>\n\n' + content + '<|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>assistant\n' + content + '<|im_end|>\n' }}{%- endif %}"
    "{%- else %}{{- '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}"
    "{%- endif %}")
MISTRAL_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
                    "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}")
PHI3_TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")
GEMMA3_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
                   "{{ '<start_of_turn>' + role + '\n' + m['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")

# name: (specials, bos, eos, template)
TOKENIZERS = {
    "llama3": (["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
               "<|begin_of_text|>", "<|eot_id|>", LLAMA3_TEMPLATE),
    "qwen3": (["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"], None, "<|im_end|>", QWEN3_TEMPLATE),
    "mistral": (["<unk>", "<s>", "</s>", "[INST]", "[/INST]"], "<s>", "</s>", MISTRAL_TEMPLATE),
    "smollm3": (["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>", CHATML_TEMPLATE),
    "phi3": (["<unk>", "<s>", "</s>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"], None, "<|end|>",
             PHI3_TEMPLATE),
    # <unk> and <mask> at Gemma's own ids (transformers' GemmaTokenizer adds them when a vocabulary lacks them)
    "gemma3": (["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<end_of_turn>",
               GEMMA3_TEMPLATE),
}
# Phi-3's special tokens swallow the whitespace after them (its tokenizer.json's rstrip), and llama.cpp applies
# the same rule to every GGUF whose general.name says phi-3/phi3 (llama-vocab.cpp), so both sides agree
RSTRIP = {"phi3": ("<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "</s>")}
# Phi-4-mini's tokenizer_config names its BPE class (llama.cpp's converter reads a SentencePiece model otherwise)
TOKENIZER_CLASS = {"phi3": "GPT2Tokenizer"}


def write_tokenizer(path: Path, family: str, vocab_size: int = 320) -> dict:
    """A real byte-level BPE tokenizer.json with the family's special tokens; returns their ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials, bos, eos, template = TOKENIZERS[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT, trainer)
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    if family in RSTRIP:
        doc = json.loads((path / "tokenizer.json").read_text())
        for t in doc["added_tokens"]:
            t["rstrip"] = t["content"] in RSTRIP[family]
        (path / "tokenizer.json").write_text(json.dumps(doc))
    extra = {"tokenizer_class": TOKENIZER_CLASS[family]} if family in TOKENIZER_CLASS else {}
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": bos, "eos_token": eos, "add_bos_token": False, "chat_template": template, **extra}))
    return {"vocab_size": tok.get_vocab_size(), "bos_token_id": tok.token_to_id(bos) if bos else None,
            "eos_token_id": tok.token_to_id(eos)}


COMMON = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=256)
ORIGINAL_CONTEXT = 32  # llama3 / longrope scaling: prompts go beyond it
WINDOW = 8  # sliding windows: prompts go beyond it


def hf_model(name: str, ids: dict):
    import transformers as tf

    c = {**COMMON, **ids, "tie_word_embeddings": False, "pad_token_id": None}
    if name == "llama3":
        cfg = tf.LlamaConfig(num_hidden_layers=2, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": ORIGINAL_CONTEXT}, **{**c, "tie_word_embeddings": True})
        return tf.LlamaForCausalLM(cfg)
    if name == "qwen3":  # head_dim 32 with 4 heads over a hidden size of 64
        return tf.Qwen3ForCausalLM(tf.Qwen3Config(num_hidden_layers=2, head_dim=32, **c))
    if name == "mistral":
        return tf.MistralForCausalLM(tf.MistralConfig(num_hidden_layers=2, sliding_window=WINDOW, **c))
    if name == "mistral_nowindow":
        return tf.MistralForCausalLM(tf.MistralConfig(num_hidden_layers=2, sliding_window=None, **c))
    if name == "smollm3":  # layer 3 has no RoPE
        return tf.SmolLM3ForCausalLM(tf.SmolLM3Config(num_hidden_layers=4, no_rope_layer_interval=4, **c))
    if name == "phi3":  # 12 of 16 dims rotated, longrope with 6 short and 6 long factors
        rope = {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                "short_factor": [1.0, 1.1, 1.2, 1.5, 2.0, 3.0], "long_factor": [1.0, 1.5, 2.5, 4.0, 8.0, 16.0],
                "original_max_position_embeddings": ORIGINAL_CONTEXT}
        return tf.Phi3ForCausalLM(tf.Phi3Config(num_hidden_layers=2, rope_parameters=rope,
                                                original_max_position_embeddings=ORIGINAL_CONTEXT, **c))
    if name == "phi3_wide":  # rows of 256, so llama.cpp's K-quants apply (and its per-tensor type rules show)
        return tf.Phi3ForCausalLM(tf.Phi3Config(num_hidden_layers=4, **{**c, "hidden_size": 256, "intermediate_size": 512}))
    if name == "gemma3":
        cfg = tf.Gemma3TextConfig(
            num_hidden_layers=3, head_dim=16, query_pre_attn_scalar=16, sliding_window=WINDOW,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
            **{**c, "tie_word_embeddings": True})
        return tf.Gemma3ForCausalLM(cfg)
    raise KeyError(name)


def build(name: str, base: Path) -> Path:
    """The checkpoint directory of family `name` under `base` (made on first use)."""
    import torch

    path = base / f"tiny-{name}"
    if (path / "config.json").exists():
        return path
    ids = write_tokenizer(path, name.split("_")[0])
    torch.manual_seed(0)
    model = hf_model(name, ids)
    with torch.no_grad():  # norms away from their identity init, so a wrong norm convention shows
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(torch.randn(p.shape) * 0.3)
    model.save_pretrained(path)
    return path
