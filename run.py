"""Entry point: `python run.py` serves the API; `python run.py --help` lists the commands."""

from server.cli import main

if __name__ == "__main__":
    main()
