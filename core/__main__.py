import sys

from core.cli import main

if __name__ == "__main__":  # not when a spawned child process imports this module as its __main__
    sys.exit(main())
