"""Floor 2, the model: config, architecture registry, the one Transformer, tokenizer, chat template and
conversation encoding, loaders (HF, GGUF), manifest, file helpers, errors. Imports only targets/."""
