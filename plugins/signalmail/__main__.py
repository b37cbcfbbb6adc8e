"""`python -m signalmail`: the same CLI as the `signalmail` command."""

from signalmail.cli import main

main()
