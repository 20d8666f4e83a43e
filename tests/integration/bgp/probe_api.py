"""A stand-in API process for ExaBGP in tests: appends every line ExaBGP sends to the file
named by argv[1] and never writes a command."""
import sys

with open(sys.argv[1], "a", buffering=1) as out:
    for line in sys.stdin:
        out.write(line)
