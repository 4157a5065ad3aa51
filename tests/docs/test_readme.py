"""The README's curl examples of the four methods, run as written against a real emulator."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from tests.support.ci import unavailable
from tests.support.emulator_server import EmulatorServer

README = Path(__file__).resolve().parents[2] / "README.md"


def examples() -> list[tuple[str, str]]:
    """(curl command, the output written under it) from the README's "The four methods" block."""
    text = README.read_text()
    section = text[text.index("## The four methods") :]
    block = section[section.index("```sh") + 5 : section.index("```", section.index("```sh") + 5)]
    found, lines = [], block.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("curl "):
            command = [lines[i]]
            while command[-1].endswith("\\"):
                i += 1
                command.append(lines[i])
            expected = []
            while i + 1 < len(lines) and lines[i + 1].startswith("#"):  # the output, up to the blank line
                i += 1
                expected.append(lines[i][2:].strip())
            found.append(("\n".join(command), "".join(expected)))
        i += 1
    return found


def close(actual: object, expected: object) -> bool:
    """Equal; floats within one unit of their last written digit (another CPU may round dlib differently)."""
    if isinstance(expected, float) or isinstance(actual, float):
        return isinstance(actual, (int, float)) and abs(float(actual) - float(expected)) <= 0.00011  # type: ignore[arg-type]
    if isinstance(expected, dict) and isinstance(actual, dict):
        return list(actual) == list(expected) and all(close(actual[k], expected[k]) for k in expected)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(actual) == len(expected) and all(close(a, e) for a, e in zip(actual, expected, strict=True))
    return actual == expected


def test_the_four_methods_answer_as_the_readme_shows(server: EmulatorServer) -> None:
    if shutil.which("curl") is None:
        unavailable("curl is not installed: the README's examples run through it")
    cases = examples()
    assert [re.search(r"/(set|recognize|delete|truncate)\?", c).group(1) for c, _ in cases] == [  # type: ignore[union-attr]
        "set",
        "recognize",
        "delete",
        "truncate",
    ]
    server.ok("truncate", {"space": "0"})
    api = f"{server.base_url}/api/v1/persons"
    for command, expected in cases:
        script = f"API='{api}'\nAUTH='oauth_token=any-token&oauth_provider=mcs'\n{command}"
        result = subprocess.run(["bash", "-c", script], cwd=README.parent, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert close(json.loads(result.stdout), json.loads(expected)), (command, result.stdout)
