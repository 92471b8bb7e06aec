"""How every entry point fails: an expected failure prints one line, `error: WHAT (WHERE)`, and exits
non-zero; a traceback is printed only for a real bug, or for anything when LLAVA_DEBUG=1 is set.

Expected failures are the ones a user causes and can fix: a wrong flag, a missing or malformed file,
a folder that is not a checkpoint, a full disk, a folder they may not write. Code that detects one
raises `UserError` (or a subclass) with the whole message; file-system errors (`OSError`) are
expected as they come. Anything else is a bug and keeps its traceback.

Exit statuses: 2 for a wrong command line (as argparse), 1 for every other expected failure.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import functools
import os
import shutil
import sys

DEBUG_VARIABLE = "LLAVA_DEBUG"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NOT_ALLOWED = (errno.EACCES, errno.EPERM, errno.EROFS)


class UserError(Exception):
    """An expected failure; its text is the whole one-line message (without `error: `)."""

    exit_code = 1


class UsageError(UserError, ValueError):
    """The command line asks for something this program cannot do."""

    exit_code = 2


class InputError(UserError, ValueError):
    """A file given as input is missing, malformed, or not what it should be."""


class SaveError(UserError, OSError):
    """Writing an output failed for a reason the user can fix: no space, no permission."""


def debugging() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "").strip() not in ("", "0")


def one_line(exc: BaseException) -> str | None:
    """The one-line message of an expected failure, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, UserError):
        return _single_line(str(exc))
    if isinstance(exc, OSError):
        if exc.errno in _NO_SPACE and exc.filename:
            return f"no space left on the device ({exc.filename})"
        if exc.strerror and exc.filename:
            return f"{exc.strerror.lower()} ({exc.filename})"
        return _single_line(str(exc)) or type(exc).__name__
    return None


def listing(items, limit: int, separator: str = "; ") -> str:
    """The first `limit` items joined by `separator`, then how many more there are: `a; b; and 3 more`
    (a comma list reads `a, b and 3 more`). One message names a handful, never thousands."""
    items = [str(item) for item in items]
    text = separator.join(items[:limit])
    if len(items) > limit:
        text += f"{separator.replace(',', '')}and {len(items) - limit} more"
    return text


def exit_code(exc: BaseException) -> int:
    return getattr(exc, "exit_code", 1)


def _single_line(text: str) -> str:
    return " ".join(text.split())


def say_error(message: str) -> None:
    """Writes `error: MESSAGE` to stderr in one write, so that ranks sharing a terminal or a log never
    splice their lines together (print writes the text and its newline separately)."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def report(exc: BaseException, prefix: str = "") -> int:
    """Prints an expected failure's line to stderr and returns its exit status; re-raises a bug (and,
    with LLAVA_DEBUG=1, everything)."""
    message = one_line(exc)
    if message is None or debugging():
        raise exc
    say_error(prefix + message)
    return exit_code(exc)


def entry_point(main):
    """Wraps a `main(argv=None)`: an expected failure ends the process with its one line and status;
    Ctrl-C ends it with status 130 and one line."""

    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            if debugging():
                raise
            say_error("interrupted")
            sys.exit(130)
        except Exception as e:  # noqa: BLE001 - report() re-raises everything that is not expected
            sys.exit(report(e))

    return run


def subcommands(doc: str, commands: dict):
    """The `main(argv=None)` of `python -m PACKAGE COMMAND ...`: `commands` maps a name to its module's
    `main(argv)`, which gets the rest of the command line; no command or --help prints `doc`'s first
    paragraph (its `COMMAND` written as the names), an unknown one is a UsageError naming the others."""

    def main(argv: list[str] | None = None):
        argv = sys.argv[1:] if argv is None else argv
        if not argv or argv[0] in ("-h", "--help"):
            print(doc.split("\n\n")[0].replace("COMMAND", "|".join(commands)))
            return 0
        if argv[0] not in commands:
            raise UsageError(f"unknown command {argv[0]!r} (commands: {', '.join(commands)})")
        return commands[argv[0]](argv[1:])

    return main


class OneLineArgumentErrors:
    """Mixed into an argparse parser: its errors (a wrong value, an unknown or missing flag) become one
    UsageError line pointing at --help, instead of the usage text and a line of their own."""

    def error(self, message):
        raise UsageError(f"{message} ({self.help_hint()})")

    def help_hint(self) -> str:
        return f"{self.prog} --help lists the flags"

    def unknown_arguments(self, unknown: list[str]) -> UsageError:
        """The error for what a parser left unparsed (HfArgumentParser's `return_remaining_strings`): the
        unknown flags, each with the known one it most resembles (a typo), or the stray values."""
        flags = [a.split("=", 1)[0] for a in unknown if a.startswith("-")]
        if not flags:
            return UsageError(
                f"unexpected argument{'s' if len(unknown) > 1 else ''} {' '.join(unknown)} ({self.help_hint()})"
            )
        # argparse's own table of option strings: this object is the parser that holds it. Compared in one
        # spelling, since either is accepted; the flag suggested is the first one declared.
        known = {}
        for option in self._option_string_actions:
            if option.startswith("--"):
                known.setdefault(_dashed(option), option)
        guesses = [difflib.get_close_matches(_dashed(flag), list(known), n=1, cutoff=0.8) for flag in flags]
        named = ", ".join(
            f"{flag} (did you mean {known[guess[0]]}?)" if guess else flag for flag, guess in zip(flags, guesses)
        )
        return UsageError(f"unknown flag{'s' if len(flags) > 1 else ''} {named} ({self.help_hint()})")


def _dashed(flag: str) -> str:
    """`--video_folder` -> `--video-folder`."""
    return flag[:2] + flag[2:].replace("_", "-")


class ArgumentParser(OneLineArgumentErrors, argparse.ArgumentParser):
    """argparse's parser with one-line errors, and each long flag taken in both spellings: `--video-folder`
    and `--video_folder` (`--video_folder=DIR` too) for a declared `--video-folder`, `--max-new-tokens` for
    a declared `--max_new_tokens`, as training's parser (transformers' HfArgumentParser) takes them.

    A flag given in the spelling the parser does not declare is rewritten to the declared one before
    argparse reads the command line, so --help, the usage line and the error messages show each flag once,
    as declared. Only whole flags are rewritten: a value is untouched (after `=`, or after `--`, which
    ends the flags), and so is a flag known in neither spelling, which argparse then reports (an
    abbreviation is argparse's, in the declared spelling)."""

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        end = args.index("--") if "--" in args else len(args)
        return super().parse_known_args([*map(self._declared_spelling, args[:end]), *args[end:]], namespace)

    def _declared_spelling(self, arg: str) -> str:
        flag, equals, value = arg.partition("=")
        if not flag.startswith("--") or flag in self._option_string_actions:
            return arg
        for spelling in (_dashed(flag), flag[:2] + flag[2:].replace("-", "_")):
            if spelling in self._option_string_actions:
                return spelling + equals + value
        return arg


# ------------------------------------------------------------------------------------------ inputs
class MissingInputFile(InputError, FileNotFoundError):
    """An input file or folder named on the command line is not there."""


def check_input_file(path: str | None, what: str) -> None:
    """`path` (given as `what`, e.g. a flag) is a file; nothing to check where it is not given."""
    if not path:
        return
    if os.path.isdir(path):
        raise InputError(f"{what} is a folder, not a file ({path})")
    if not os.path.isfile(path):
        raise MissingInputFile(f"{what} file does not exist ({path})")


def check_input_folder(path: str | None, what: str) -> None:
    """`path` (given as `what`, e.g. a flag) is a folder; nothing to check where it is not given."""
    if not path:
        return
    if not os.path.exists(path):
        raise MissingInputFile(f"{what} folder does not exist ({path})")
    if not os.path.isdir(path):
        raise InputError(f"{what} is a file, not a folder ({path})")


# ------------------------------------------------------------------------------------------ saving
def size_text(count: int) -> str:
    """A byte count as people read it: 812 bytes, 4.1 KB, 1.6 MB, 2.3 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def free_bytes(path: str) -> int | None:
    """Free bytes on the file system that holds `path` (or its nearest existing parent)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


# Libraries that write through their own I/O report a full disk in their own words: torch's zip writer
# ("unexpected pos", "file write failed"), safetensors ("StorageFull", "No space left on device").
_NO_SPACE_WORDS = ("no space left", "storagefull", "disk quota", "unexpected pos", "file write failed")


def _is_no_space(exc: BaseException, path: str, needed: int | None) -> bool:
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return True
    if not any(word in str(exc).lower() for word in _NO_SPACE_WORDS):
        return False
    free = free_bytes(path)
    # The words alone also fit other write failures: believe them when the disk is (nearly) full.
    return free is not None and free < max(needed or 0, 1 << 20)


def _refusal(exc: BaseException) -> str | None:
    """'read-only file system' or 'permission denied' where a write was refused, also when a library
    (torch's zip writer, safetensors) reports it in its own exception's words."""
    if isinstance(exc, OSError):
        if exc.errno == errno.EROFS:
            return "read-only file system"
        return "permission denied" if exc.errno in _NOT_ALLOWED else None
    text = str(exc).lower()
    if "read-only file system" in text or "os error 30" in text:
        return "read-only file system"
    if "permission denied" in text or "os error 13" in text:
        return "permission denied"
    return None


@contextlib.contextmanager
def saving(path: str, what: str = "", needed: int | None = None):
    """Turns a full disk or a refused write while saving `path` into a one-line SaveError saying so,
    with the space needed (`needed`: an estimate in bytes, where the caller has one) and free."""
    try:
        yield
    except SaveError:
        raise
    except Exception as e:
        label = f"saving {what} " if what else "saving "
        if _is_no_space(e, path, needed):
            free = free_bytes(path)
            space = f"needs about {size_text(needed)}, " if needed else ""
            space += f"{size_text(free)} free" if free is not None else "free space unknown"
            raise SaveError(f"no space left on the device {label}({path}: {space})") from e
        reason = _refusal(e)
        if reason:
            raise SaveError(f"{reason} {label}({getattr(e, 'filename', None) or path})") from e
        raise


def check_writable(folder: str, what: str) -> None:
    """Fails early, in one line, when `folder` (or the parent it would be made in) cannot be written:
    before a model is loaded, not at the first checkpoint hours later."""
    target = os.path.abspath(folder)
    while not os.path.exists(target):
        parent = os.path.dirname(target)
        if parent == target:
            break
        target = parent
    if not os.path.isdir(target):
        raise InputError(f"{what} {folder} is not a folder ({target} is a file)")
    try:
        read_only = bool(os.statvfs(target).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        raise SaveError(f"read-only file system: {what} {folder} cannot be written ({target})")
    if not os.access(target, os.W_OK | os.X_OK):
        raise SaveError(f"permission denied: {what} {folder} cannot be written ({target})")
