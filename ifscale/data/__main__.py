"""`python -m ifscale.data --data-dir DIR`: fetch MNIST into DIR (what `make setup` runs)."""

from ifscale.data.fetch import main

main()
