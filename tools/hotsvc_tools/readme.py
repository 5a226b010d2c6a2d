"""`make docs`: paste the configuration table generated from hotsvc.flags into README.md."""

from __future__ import annotations

from hotsvc import flags
from hotsvc_tools.paths import REPO

HEADER = "| flag | env | default | meaning |"


def main() -> None:
    readme = REPO / "README.md"
    text = readme.read_text()
    start = text.index(HEADER)
    end = text.index("\n\n", start)
    readme.write_text(text[:start] + flags.markdown_table() + text[end:])


if __name__ == "__main__":
    main()
