"""The ``grukit`` command line (filled in below)."""
import sys
def main(argv=None):
    print("grukit")
    return 0
