"""Mistakes a user can fix on the command line end in one or two lines and exit status 2; bugs keep their traceback.

The entry points (`main`, `predict`, the data_prep tools that take a config) parse their flags through
`flags_parser(program)`, which loads the `--config` file itself before absl does: a missing or broken file, an
unknown variant or a mistyped field (at any depth, with a "did you mean") is named in one line instead of the
ml_collections / absl tracebacks, and before jax or TensorFlow is imported. Exceptions raised inside library code
while a config is built are not the user's to fix and are re-raised.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

EXIT_USAGE = 2
# 128 + SIGINT: the status a shell reports for a program ended by Ctrl-C.
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A mistake the user can fix (a flag, a config field or value, a workdir): one or two lines, exit status 2."""


def fail(program: str, message: Any, status: int = EXIT_USAGE) -> NoReturn:
    """Prints `program: error: message` on stderr and exits with `status` (2: a usage mistake)."""
    print(f"{program}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def check_no_arguments(argv: Sequence[str], program: str) -> None:
    """Positional arguments are a mistake (every input is a flag): one line, exit status 2."""
    if len(argv) > 1:
        fail(program, f"unexpected arguments {list(argv[1:])} (flags take the form --name=value)")


def exit_interrupted(program: str, message: Any) -> NoReturn:
    """Ctrl-C: `program: message` (what was saved) on stderr, exit status 130 as a shell reports it."""
    print(f"{program}: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_INTERRUPTED)


def config_spec(argv: Sequence[str], name: str = "config") -> str | None:
    """The value of `--config` in argv (`--config=X` or `--config X`; the last one wins, as in absl)."""
    spec = None
    for i, arg in enumerate(argv):
        if arg in (f"--{name}", f"-{name}") and i + 1 < len(argv):
            spec = argv[i + 1]
        elif m := re.match(rf"^--?{name}=(.*)$", arg):
            spec = m.group(1)
    return spec


def split_spec(spec: str) -> tuple[str, str | None]:
    """'configs/ucf101.py:split2,cpu' -> ('configs/ucf101.py', 'split2,cpu'); no colon -> (path, None)."""
    path, sep, arg = spec.partition(":")
    return path, (arg if sep else None)


def _frame_in(exc: BaseException, path: str) -> traceback.FrameSummary | None:
    """The innermost traceback frame of `exc` that runs in the file `path`, if any."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    return frames[-1] if frames else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def load_config_module(spec: str):
    """Executes the config file named by `spec` (without calling get_config); UserError when missing or broken."""
    path, _ = split_spec(spec)
    if not path:
        raise UserError("--config is empty: name a config file, e.g. --config=configs/demo.py")
    if not os.path.isfile(path):
        where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
        raise UserError(f"--config={spec}: {path} does not exist{where}")
    abspath = os.path.abspath(path)
    module_spec = importlib.util.spec_from_file_location("_skclip_user_config", abspath)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as e:
        raise UserError(f"--config={spec}: {path}:{e.lineno}: {e.msg}") from None
    except Exception as e:
        # The file's own mistake (a NameError, a bad import) is the user's to fix; a library's is a bug.
        frame = _frame_in(e, abspath)
        if frame is None and not isinstance(e, ImportError):
            raise
        line = f"{path}:{frame.lineno}: " if frame else f"{path}: "
        raise UserError(f"--config={spec}: {line}{_first_line(e)}") from None
    if not callable(getattr(module, "get_config", None)):
        raise UserError(f"--config={spec}: {path} defines no get_config()")
    return module


def load_config(spec: str):
    """The ConfigDict `spec` names, built as ml_collections' config flag builds it; UserError for user mistakes.

    A ValueError from get_config (an unknown or clashing variant: config_lib.variants) is the user's; any
    other exception is the user's only when it was raised in the config file itself.
    """
    module = load_config_module(spec)
    path, arg = split_spec(spec)
    try:
        return module.get_config(*(() if arg is None else (arg,)))
    except ValueError as e:
        raise UserError(f"--config={spec}: {str(e).strip()}") from None
    except Exception as e:
        frame = _frame_in(e, os.path.abspath(path))
        if frame is None:
            raise
        raise UserError(f"--config={spec}: {path}:{frame.lineno}: {_first_line(e)}") from None


def _is_section(node: Any) -> bool:
    return hasattr(node, "keys") and hasattr(node, "__getitem__")


def check_override_paths(config: Any, argv: Sequence[str], name: str = "config") -> None:
    """Every `--config.a.b.c=...` names an existing field; else UserError naming it, with a "did you mean"."""
    for arg in argv:
        m = re.match(rf"^--?(?:no)?{name}\.([^=]*)", arg)
        if not m:
            continue
        dotted = m.group(1)
        node, walked = config, []
        for key in dotted.split("."):
            where = ".".join([name, *walked])
            if not _is_section(node):
                raise UserError(
                    f"--{name}.{dotted}: {where} is a value ({type(node).__name__}), not a section "
                    "with fields"
                )
            keys = [str(k) for k in node.keys()]
            if key not in keys:
                close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
                hint = (
                    f"; did you mean --{where}.{close[0]}?"
                    if close
                    else f"; its fields: {', '.join(sorted(keys))}"
                )
                raise UserError(f"--{name}.{dotted}: {where} has no field {key!r}{hint}")
            node = node[key]
            walked.append(key)


def _flag_error_text(error: BaseException) -> str:
    """absl's message without the traceback text ml_collections folds into it; one line where possible."""
    text = str(error).strip()
    if "Traceback (most recent call last)" in text:
        lines = [line for line in text.splitlines() if line.strip()]
        head = lines[0].split(":", 1)[0] if lines else ""
        return f"{head}: {lines[-1].strip()}" if head.startswith("flag --") else lines[-1].strip()
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def flags_parser(program: str, config_flags: Sequence[str] = ("config",)) -> Callable:
    """An `app.run(..., flags_parser=...)` that reports user mistakes in one line with exit status 2."""
    from absl import flags

    def parse(argv: list[str]) -> list[str]:
        try:
            for name in config_flags:
                spec = config_spec(argv, name)
                if spec is not None:
                    check_override_paths(load_config(spec), argv, name)
                elif any(re.match(rf"^--?(?:no)?{name}\.", a) for a in argv):
                    raise UserError(f"--{name}.FIELD overrides need --{name}=FILE")
            return flags.FLAGS(argv)
        except UserError as e:
            fail(program, e)
        except flags.Error as e:
            fail(program, _flag_error_text(e))

    return parse
