"""triptych/common/console.py: the one console everything prints to, its recording for --html/--svg, and the
layering rule that put it in common/ (nothing below commands/ imports commands: tests/test_floors.py)."""
from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import pytest
from rich.progress import Progress
from rich.table import Table

from triptych.common import console as console_module
from triptych.common.checks import InputError
from triptych.common.console import RecordingConsole

ROOT = Path(__file__).resolve().parents[1]


def recorded_text(con: RecordingConsole) -> str:
    return con.stop_recording().export_text(clear=False)


def progress_run(con, transient: bool, during: str | None = None) -> None:
    with Progress(console=con, transient=transient) as progress:
        task = progress.add_task("work", total=4)
        for i in range(4):
            time.sleep(0.12)  # several auto-refreshes (10 a second), each one a redraw on a terminal
            progress.advance(task)
            if during and i == 1:
                con.print(during)


@pytest.mark.parametrize("terminal", [True, False])
def test_record_keeps_prints_and_no_progress_frames(terminal):
    con = RecordingConsole(file=io.StringIO(), force_terminal=terminal, width=60)
    con.print("not recorded yet")
    con.start_recording()
    con.print("before")
    progress_run(con, transient=True, during="during")
    con.print("after")
    text = recorded_text(con)
    assert "not recorded yet" not in text
    assert text.count("before") == text.count("during") == text.count("after") == 1
    assert "work" not in text  # a transient bar is erased from the terminal, so from the record too
    if not terminal:  # a file shows no redraws: the record is exactly the file's text
        assert text == con.file.getvalue().replace("not recorded yet\n", "")


@pytest.mark.parametrize("terminal", [True, False])
def test_a_kept_progress_bar_is_recorded_once_in_its_final_state(terminal):
    con = RecordingConsole(file=io.StringIO(), force_terminal=terminal, width=60)
    con.start_recording()
    progress_run(con, transient=False)
    con.print("after")
    text = recorded_text(con)
    assert text.count("work") == 1 and "100%" in text
    assert text.endswith("0:00:00\nafter\n"), text  # the frame, then the next print: no blank line between


def test_record_keeps_tables_and_styles_for_html():
    con = RecordingConsole(file=io.StringIO(), width=80)
    con.start_recording()
    table = Table()
    table.add_column("op")
    table.add_row("[green]softmax[/]")
    con.print(table)
    html = con.stop_recording().export_html(clear=False)
    assert "softmax" in html and "color" in html
    assert not con.recording


def test_commands_print_to_the_same_console_object():
    # training imports common.console, the commands import commands._common: one object, one record.
    from triptych.commands import _common

    assert _common.console is console_module.console
    assert _common.print_json is console_module.print_json
    assert issubclass(_common.CLIError, InputError)


def test_print_json_output_is_recorded_as_shown(capsys):
    console_module.console.start_recording()
    console_module.print_json({"op": "split_heads"})
    recorder = console_module.console.stop_recording()
    assert json.loads(capsys.readouterr().out) == {"op": "split_heads"}
    assert json.loads(recorder.export_text(clear=False)) == {"op": "split_heads"}


def test_report_flags_start_recording_and_save_reports_writes_and_stops(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    console_module.add_report_flags(parser)
    assert console_module.save_reports(parser.parse_args([])) == []  # no flag: nothing recorded, nothing written
    assert not console_module.console.recording
    args = parser.parse_args(["--html", str(tmp_path / "r.html"), "--svg", str(tmp_path / "sub" / "r.svg")])
    assert console_module.console.recording
    console_module.console.print("a line the page must show")
    assert console_module.save_reports(args) == [str(tmp_path / "r.html"), str(tmp_path / "sub" / "r.svg")]
    assert not console_module.console.recording
    assert "a line the page must show" in (tmp_path / "r.html").read_text()
    assert (tmp_path / "sub" / "r.svg").read_text().lstrip().startswith("<svg")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["r.html", "r.svg", "sub"]  # no temporary files left
    assert "saved:" in capsys.readouterr().err  # stderr: stdout may be JSON

