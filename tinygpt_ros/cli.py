"""`tinygpt-ros` command line: placeholder until subcommands land."""
def main() -> int:
    return 0
