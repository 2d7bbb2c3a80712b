"""The requirements of the project with one extra, read from pyproject.toml alone, one a line:
the project's own and the extra's (extras it names of the project itself followed; not the
build system's, which pip installs apart, only to build the project), so that an image installs
its dependencies in a layer that changing the code does not rebuild, then the project on top
(deploy/docker/cpu.Dockerfile).

    python3 requirements.py pyproject.toml serve > requirements.txt

Standard library only: it runs on the base image's python3 before anything is installed.
"""

import re
import sys
import tomllib


def requirements(pyproject: dict, extra: str) -> list[str]:
    project = pyproject["project"]
    own = re.compile(rf"{re.escape(project['name'])}\s*\[([^\]]+)\]\s*", re.IGNORECASE)
    extras = project.get("optional-dependencies", {})
    found, pending, seen = [], [extra], set()
    while pending:
        wanted = pending.pop(0)
        if wanted in seen:
            continue
        if wanted not in extras:
            raise SystemExit(f"{project['name']} has no extra {wanted!r} (it has {', '.join(sorted(extras))})")
        seen.add(wanted)
        for requirement in extras[wanted]:
            match = own.fullmatch(requirement)
            if match:
                pending.extend(name.strip() for name in match.group(1).split(","))
            else:
                found.append(requirement)
    return [*project.get("dependencies", []), *found]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0], "rb") as file:
        print("\n".join(requirements(tomllib.load(file), argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
