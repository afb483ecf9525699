"""The interactive chat loop of `edgechat chat` without --prompt."""
from __future__ import annotations

from rich.console import Console

console = Console()


def repl(chat) -> None:
    console.print("[dim]edgechat chat: type a message; /reset clears the history, /exit quits.[/dim]")
    while True:
        try:
            line = console.input("[bold]> [/bold]")
        except EOFError:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            chat.reset()
            console.print("[dim](history cleared)[/dim]")
            continue
        if not reply(chat, text):
            continue
        s = chat.last_reply.stats
        console.print(f"\n[dim]{s.describe()}[/dim]", highlight=False, soft_wrap=True)  # one line, piped or not


def reply(chat, text: str) -> bool:
    """Stream one reply; Ctrl-C stops that reply only: its user turn is taken back, the session goes on."""
    stream = None
    try:
        stream = chat.send(text, stream=True)
        for piece in stream:
            console.out(piece, end="", highlight=False)
        return True
    except KeyboardInterrupt:
        if stream is not None:
            stream.close()
        if chat.messages and chat.messages[-1]["role"] == "user":
            chat.messages.pop()  # the history stays as it was before this turn
        console.print("\n[dim](reply stopped)[/dim]")
        return False
