"""`python -m reverie` runs the CLI. Guarded, because vLLM's engine starts its workers by spawn, which imports
`__main__` again."""

from reverie.cli import main

if __name__ == "__main__":
    main()
