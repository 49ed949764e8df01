"""`python -m pretextlab ...` (and `torchrun -m pretextlab ...`) run the command line."""

from .cli import main

main()
