"""Flags and error handling shared by the data_prep command-line tools.

Each tool defines its flags only when run as a program (`python -m data_prep.<tool>`), never
on import, so tests and the demo can import the converters without claiming generic flag names
such as --seed or --dataset in their own process.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from absl import flags, logging

from data_prep import tfds_writer


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


def run_tool(convert: Callable[[], Mapping[str, Any]]) -> None:
    """Runs a conversion; a DataPrepError becomes one clear message and exit status 1.

    TFDS's own progress bars are switched off: each tool shows one tqdm bar per split.
    """
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    try:
        summary = convert()
    except tfds_writer.DataPrepError as e:
        logging.error("%s", e)
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    report(summary)
