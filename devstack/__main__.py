"""`python -m devstack run`: see `devstack.cli`."""

from devstack.cli import main

if __name__ == "__main__":
    main()
