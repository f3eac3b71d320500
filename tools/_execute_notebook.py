"""Execute one notebook with nbclient and report the outcome as one JSON line.

Usage: python3 _execute_notebook.py NOTEBOOK OUTPUT [--timeout SECONDS] [--kernel NAME] [--twice]

The kernel runs in the notebook's folder. The executed notebook is always
written to OUTPUT, also when a cell fails (then it holds every cell up to and
including the failing one). The last line on stdout is:

    {"ok": bool, "seconds": float, "failedCell": int|null,
     "error": {"ename": str, "evalue": str, "traceback": [str]}|null}

Errors are never allowed (no allow_errors): a cell whose execute_reply has
status "error" fails the run, including a reply with no error output and an
empty traceback, which is what the Deno kernel sends for a failed npm import.
Private helper of tools/report.ts.
"""

import argparse
import copy
import json
import math
import os
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionComplete
from nbclient.util import ensure_async

SILENT_FAILURE = (
    'The kernel replied "{evalue}" with an empty traceback and no error output. '
    "This is what the Deno kernel does when an import fails: run `deno cache` on "
    "the cell's imports to see the real error"
)


# How long to keep listening for a cell's outputs after the kernel said it is idle.
LATE_OUTPUT_GRACE_SECONDS = 0.05


class LateOutputClient(NotebookClient):
    """An nbclient that also keeps outputs arriving after the idle status.

    Deno 2.9's kernel can publish `status: idle` for a cell before the
    display messages of that cell's last lines; plain nbclient stops reading
    at idle and drops them (seen: several lost outputs per 30-cell notebook).
    After idle, keep reading the cell's messages until none arrives for
    LATE_OUTPUT_GRACE_SECONDS.
    """

    async def _async_poll_output_msg(self, parent_msg_id, cell, cell_index):
        await super()._async_poll_output_msg(parent_msg_id, cell, cell_index)
        while True:
            try:
                msg = await ensure_async(
                    self.kc.iopub_channel.get_msg(timeout=LATE_OUTPUT_GRACE_SECONDS)
                )
            except Exception:  # noqa: BLE001 - queue.Empty: nothing more arrived
                return
            if msg["parent_header"].get("msg_id") != parent_msg_id:
                continue
            if msg["msg_type"] == "status":
                continue
            try:
                self.process_message(msg, cell, cell_index)
            except CellExecutionComplete:
                pass


def main() -> int:
    parser = argparse.ArgumentParser(description="Execute one notebook with nbclient")
    parser.add_argument("notebook")
    parser.add_argument("output")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per cell")
    parser.add_argument("--kernel", default="deno")
    parser.add_argument(
        "--twice",
        action="store_true",
        help="run every cell, then every cell again in the same kernel (cells must be re-runnable)",
    )
    args = parser.parse_args()

    notebook = nbformat.read(args.notebook, as_version=4)
    if args.twice:
        again = copy.deepcopy(notebook.cells)
        for index, cell in enumerate(again):
            cell["id"] = f"again-{index}"
        notebook.cells = notebook.cells + again
    state = {"cell": None, "reply": None}

    def on_cell_start(cell, cell_index):
        state["cell"] = cell_index

    def on_cell_error(cell, cell_index, execute_reply):
        state["reply"] = execute_reply.get("content", {})

    client = LateOutputClient(
        notebook,
        kernel_name=args.kernel,
        timeout=max(1, math.ceil(args.timeout)),
        allow_errors=False,
        record_timing=True,
        resources={"metadata": {"path": os.path.dirname(os.path.abspath(args.notebook))}},
        on_cell_start=on_cell_start,
        on_cell_error=on_cell_error,
    )

    started = time.monotonic()
    error = None
    try:
        client.execute()
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none is raised
        error = describe_failure(exc, state, notebook)
    seconds = round(time.monotonic() - started, 3)

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    nbformat.write(notebook, args.output)

    result = {
        "ok": error is None,
        "seconds": seconds,
        "failedCell": None if error is None else state["cell"],
        "error": error,
    }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if error is None else 1


def describe_failure(exc, state, notebook):
    """The error as {ename, evalue, traceback}, never an empty one."""
    reply = state["reply"]
    if reply is None:
        # Not a cell error: a timeout, a dead kernel, a kernel that never started.
        return {"ename": type(exc).__name__, "evalue": str(exc).strip(), "traceback": []}
    error = {
        "ename": reply.get("ename") or "Error",
        "evalue": reply.get("evalue") or "",
        "traceback": list(reply.get("traceback") or []),
    }
    index = state["cell"]
    outputs = notebook.cells[index].get("outputs", []) if index is not None else []
    has_error_output = any(output.get("output_type") == "error" for output in outputs)
    if not error["traceback"] and not has_error_output:
        error["evalue"] = SILENT_FAILURE.format(evalue=error["evalue"] or "error")
    return error


if __name__ == "__main__":
    sys.exit(main())
