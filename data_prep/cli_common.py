"""Flags and error handling shared by the data_prep command-line tools.

Each tool defines its flags only when run as a program (`python -m data_prep.<tool>`), never
on import, so tests and the demo can import the converters without claiming generic flag names
such as --seed or --dataset in their own process.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import app, flags, logging

from data_prep import tfds_writer
from skclip_jax import command_line


def define_output_flags(skip_bad: bool = True) -> None:
    """--out_dir, --file_format, --overwrite and (for converters of real data) --skip_bad.

    They are attributed to the running program so that its --help lists them.
    """
    main = {"module_name": sys.argv[0]}
    flags.DEFINE_string(
        "out_dir",
        None,
        "Root data directory; the dataset goes to <out_dir>/<name>/<version>.",
        **main,
    )
    flags.DEFINE_enum(
        "file_format",
        "array_record",
        list(tfds_writer.FILE_FORMATS),
        "Record format: array_record (random access, tfds.data_source) or tfrecord.",
        **main,
    )
    flags.DEFINE_bool(
        "overwrite",
        False,
        "Replace an existing dataset with the same name and version.",
        **main,
    )
    if skip_bad:
        flags.DEFINE_bool(
            "skip_bad",
            False,
            "Skip invalid clips and list them in the summary instead of failing.",
            **main,
        )


def report(summary: Mapping[str, Any]) -> None:
    """Logs the end summary and prints it, since it is the main result of a conversion."""
    text = tfds_writer.format_summary(summary)
    logging.info("Conversion summary:\n%s", text)
    print(text, flush=True)


def run_app(main: Callable[[Sequence[str]], None], program: str) -> None:
    """app.run with the flag mistakes (unknown, missing or malformed flags) as one line and exit status 2."""
    app.run(main, flags_parser=command_line.flags_parser(program, config_flags=()))


def run_tool(convert: Callable[[], Mapping[str, Any]], program: str = "data_prep") -> None:
    """Runs a conversion; a DataPrepError (a bad input or argument, the user's to fix) becomes one line
    `program: error: ...` and exit status 2, and nothing is written.

    TFDS's own progress bars are switched off: each tool shows one tqdm bar per split.
    """
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    try:
        summary = convert()
    except tfds_writer.DataPrepError as e:
        command_line.fail(program, e)
    report(summary)
