"""The artifact directory's manifest, edgechat.json: source and its hash, options, tool versions, sizes, quality."""
from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path

from edgechat.core.errors import EdgechatError
from edgechat.core.files import write_text_atomic

MANIFEST = "edgechat.json"
TOOLS = ("edgechat", "torch", "gguf", "llama_cpp_python", "executorch", "torchao", "tokenizers", "safetensors", "numpy")


def tool_versions() -> dict:
    from importlib import metadata  # 40 ms to import: only when a manifest is written

    out = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_manifest(out_dir: Path, manifest: dict) -> Path:
    manifest = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "tools": tool_versions(), **manifest}
    return write_text_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def read_manifest(out_dir: Path) -> dict | None:
    """The directory's edgechat.json, or None where it has none."""
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgechatError(f"{path} is not valid JSON (truncated?): {e}") from None
