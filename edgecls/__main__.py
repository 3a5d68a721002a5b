"""`python -m edgecls`: the same entry point as the `edgecls` console script."""
from edgecls.cli.app import main

if __name__ == "__main__":
    main()
