"""Extract the marked examples from a Markdown page and run them as a reader would.

A fenced block is marked by an HTML comment on the line before it:
`<!-- test: NAME -->` (run it), `<!-- test: NAME, after: OTHER -->` (run it after
OTHER's code, as a reader who pasted OTHER first), or `<!-- not tested: REASON -->`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import cache_lock

DOC_PORT = 8756  # the port the page shows; replaced by the test server's
RUNNABLE = ("sh", "python", "js", "applescript")

_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<code>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_TEST = re.compile(
    r"<!--\s*test:\s*(?P<name>[\w-]+)(?:\s*,\s*after:\s*(?P<after>[\w-]+))?\s*-->\s*$"
)
_NOT_TESTED = re.compile(r"<!--\s*not tested:\s*(?P<reason>\S.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of the page and what its marker says."""

    lang: str
    code: str
    line: int
    name: str | None = None  # set when marked `test:`
    after: str | None = None
    not_tested: str | None = None  # the reason, when marked `not tested:`


@dataclass
class Ran:
    """What one example did: exit status, output, and (AppleScript) the shell commands it built."""

    name: str
    returncode: int
    stdout: str
    stderr: str
    commands: list[str] = field(default_factory=list)

    def ok(self) -> Ran:
        """This result, after asserting it exited 0 (with the output in the message)."""
        assert self.returncode == 0, (
            f"{self.name} exited {self.returncode}:\n{self.stdout}\n{self.stderr}"
        )
        return self


def parse(markdown: str) -> list[Block]:
    """Every fenced block of the page, in order, with the marker on the line before it."""
    blocks = []
    for m in _FENCE.finditer(markdown):
        line = markdown.count("\n", 0, m.start()) + 1
        before = markdown[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        lang = m["info"].strip().split(" ")[0]
        test, skip = _TEST.search(before), _NOT_TESTED.search(before)
        blocks.append(
            Block(
                lang=lang,
                code=m["code"],
                line=line,
                name=test["name"] if test else None,
                after=test["after"] if test else None,
                not_tested=skip["reason"] if skip else None,
            )
        )
    return blocks


class Runner:
    """Runs the page's marked examples against one server, with THOLOS_HOME and PATH set as a user has them."""

    def __init__(
        self, blocks: list[Block], *, port: int, home: Path, workdir: Path, node_dir: Path
    ) -> None:
        self.blocks = {b.name: b for b in blocks if b.name}
        self.port = port
        self.workdir = workdir
        self.node_dir = node_dir
        # A fake HOME: examples that write under ~ (the `ask` script) never touch the real one.
        self.fake_home = workdir / "home"
        self.fake_home.mkdir(parents=True, exist_ok=True)
        venv_bin = str(
            Path(sys.executable).parent
        )  # `tholos-mlx` on PATH, as after activating .venv
        self.env = {
            **os.environ,
            "THOLOS_HOME": str(home),
            "HOME": str(self.fake_home),
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.ran: set[str] = set()

    def source(self, name: str) -> str:
        """The code of NAME, after the blocks it follows, with the test server's port."""
        block = self.blocks[name]
        code = (self.source(block.after) + "\n" if block.after else "") + block.code
        code = code.replace(f"127.0.0.1:{DOC_PORT}", f"127.0.0.1:{self.port}")
        assert str(DOC_PORT) not in code, (
            f"{name}: port {DOC_PORT} written in a form the tests cannot redirect"
        )
        return code

    def run(
        self,
        name: str,
        *argv: str,
        probe: str = "",
        env: dict[str, str | None] | None = None,
        timeout: float = 300,  # bounds a hang only: a tool call on a loaded 2-core CPU ran past 120 s
    ) -> Ran:
        """Run example NAME (plus test-only PROBE code appended) with ARGV; env values of None unset a variable."""
        block = self.blocks[name]
        code = self.source(name) + ("\n" + probe if probe else "")
        full_env = {**self.env, **{k: v for k, v in (env or {}).items() if v is not None}}
        for k, v in (env or {}).items():
            if v is None:
                full_env.pop(k, None)
        self.ran.add(name)
        if block.lang == "applescript":
            return _run_applescript(name, code, full_env, timeout)
        if block.lang == "sh":
            path = self.workdir / f"{name}.sh"
            path.write_text(code)
            path.chmod(0o755)
            # A script with a #! line is run as the page says to (executable); a snippet as typed into bash.
            cmd = [str(path), *argv] if code.startswith("#!") else ["bash", str(path), *argv]
        elif block.lang == "python":
            path = self.workdir / f"{name}.py"
            path.write_text(code)
            cmd = [sys.executable, str(path), *argv]
        elif block.lang == "js":
            # ESM ignores NODE_PATH: the script must sit beside the node_modules that holds `openai`.
            path = self.node_dir / f"doc-{name}.mjs"
            path.write_text(code)
            cmd = ["node", str(path), *argv]
        else:
            raise ValueError(f"{name}: no way to run a {block.lang!r} block")
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=self.workdir,
            check=False,
        )
        return Ran(name, out.returncode, out.stdout, out.stderr)


@dataclass
class Ctx:
    """What a page's checks need: the runner over the page and the server it talks to."""

    run: Runner
    server: Any  # tests.server.Server


def page_ctx(blocks: list[Block], server: Any, workdir: Path, node_dir: Path) -> Ctx:
    """A page's runner pointed at a running server."""
    runner = Runner(blocks, port=server.port, home=server.home, workdir=workdir, node_dir=node_dir)
    return Ctx(runner, server)


def lines(out: Ran) -> list[str]:
    """An example's output lines, blank ones dropped."""
    return [ln for ln in out.stdout.splitlines() if ln.strip()]


def call_then_answer(out: Ran) -> tuple[str, dict[str, Any], str]:
    """A tool recipe's output: `call: NAME {ARGS}` on its first line, then `answer: TEXT`."""
    import json

    call, *rest = lines(out)
    head, _, arguments = call.partition(" {")
    return head, json.loads("{" + arguments), "\n".join(rest)  # the answer may run over lines


def named_events(stdout: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The `event: NAME` frames of an SSE transcript: their names and their JSON data."""
    import json

    frames = [f for f in stdout.split("\n\n") if f.startswith("event: ")]
    names = [f.split("\n", 1)[0][len("event: ") :] for f in frames]
    return names, [json.loads(f.split("\ndata: ", 1)[1]) for f in frames]


def node_problem() -> str | None:
    """Why JavaScript examples cannot run here (node or npm missing), or None."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not on PATH" if missing else None


def ensure_openai_npm(node_dir: Path) -> None:
    """`npm install openai` into NODE_DIR unless it is there already."""
    with cache_lock.held("node"):  # parallel workers: one installs, the others find it there
        if (node_dir / "node_modules" / "openai" / "package.json").is_file():
            return
        node_dir.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "openai"],
            cwd=node_dir,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert out.returncode == 0, (
        f"npm install openai failed ({out.returncode}):\n{out.stderr[-2000:]}"
    )


# --- AppleScript -------------------------------------------------------------------------------
# AppleScript does not run on Linux. What matters in these recipes is the shell command they
# build and hand to `do shell script`, so this evaluates the small subset they use (set,
# string literals, &, quoted form of, do shell script, display dialog) exactly as AppleScript
# does, runs each command with /bin/sh -c as `do shell script` does, and fails loudly on
# anything else, so the page cannot drift into code this cannot check.

_AS_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<amp>&)|(?P<quoted>quoted form of)\b|(?P<name>[A-Za-z_]\w*))'
)
_AS_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}


def quoted_form(text: str) -> str:
    """AppleScript's `quoted form of`: single quotes around it, each ' written as '\\''."""
    return "'" + text.replace("'", "'\\''") + "'"


def _as_string(literal: str) -> str:
    return re.sub(r"\\(.)", lambda m: _AS_ESCAPES[m[1]], literal[1:-1])


def _as_eval(expr: str, names: dict[str, str]) -> str:
    parts: list[str] = []
    quote_next = False
    pos = 0
    expr = expr.rstrip()
    while pos < len(expr):
        m = _AS_TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise ValueError(f"AppleScript the tests cannot evaluate: {expr[pos:]!r}")
        pos = m.end()
        if m["amp"] or m["quoted"]:
            quote_next = bool(m["quoted"])
            continue
        value = _as_string(m["str"]) if m["str"] else names[m["name"]]
        parts.append(quoted_form(value) if quote_next else value)
        quote_next = False
    return "".join(parts)


def _run_applescript(name: str, code: str, env: dict[str, str], timeout: float) -> Ran:
    names: dict[str, str] = {}
    commands: list[str] = []
    dialogs: list[str] = []
    source = re.sub(r"¬[ \t]*\n\s*", " ", code)  # ¬ continues a statement on the next line
    for line in source.splitlines():
        line = line.strip()
        if not line or line.startswith("--"):
            continue
        m = re.fullmatch(
            r"(?:set (?P<var>\w+) to )?(?P<verb>do shell script |display dialog )?(?P<expr>.+)",
            line,
        )
        if not m or (m["var"] is None and m["verb"] is None):
            raise ValueError(f"{name}: AppleScript the tests cannot evaluate: {line!r}")
        value = _as_eval(m["expr"], names)
        if m["verb"] == "do shell script ":
            commands.append(value)
            out = subprocess.run(
                ["/bin/sh", "-c", value],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                check=False,
            )
            if out.returncode != 0:  # do shell script raises an AppleScript error
                return Ran(
                    name, out.returncode, "\n".join(dialogs), out.stderr or out.stdout, commands
                )
            value = out.stdout.removesuffix("\n")
        elif m["verb"] == "display dialog ":
            dialogs.append(value)
        if m["var"]:
            names[m["var"]] = value
    return Ran(name, 0, "\n".join(dialogs), "", commands)
