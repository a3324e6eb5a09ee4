"""`python -m afp_cli ...` runs the afp command line (as torchrun and accelerate launch need)."""

from afp_cli.cli import main

main()
