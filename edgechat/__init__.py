"""edgechat: dialogue models on edge devices, one chat API over llama.cpp, ExecuTorch and torch."""
from edgechat.api import load, load_model
from edgechat.chat import Chat, Reply
from edgechat.errors import EdgechatError
from edgechat.probe import Stats

__version__ = "0.1.0"
__all__ = ["load", "load_model", "Chat", "Reply", "Stats", "EdgechatError", "__version__"]
