"""`python -m edgechat.cli` (and `torchrun -m edgechat.cli distill ...`)."""
from edgechat.cli.main import main

main()
